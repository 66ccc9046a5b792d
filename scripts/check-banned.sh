#!/usr/bin/env bash
# Fail on functions the house style bans (unbounded or error-blind).
set -euo pipefail
cd "$(dirname "$0")/.."
if git grep -nE '\b(strcpy|strcat|sprintf|vsprintf|gets|atoi|atol)\s*\(' -- 'src/*.c' 'src/*.h' 'fuzz/*.c'; then
  echo "banned function used (see STYLE: strcpy, strcat, sprintf, gets, atoi, atol)"
  exit 1
fi
