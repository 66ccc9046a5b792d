#!/usr/bin/env bash
# Lint the REST API contract, docs/openapi.yaml, with Redocly CLI (pinned by
# package-lock.json here; scripts/deps.sh installs it with `npm ci`).  Rules:
# redocly.yaml in this directory.  Exit status non-zero on any lint error.
# Usage: bash tests/api/test_openapi_lint.sh   (from any directory)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here"
if [ ! -x node_modules/.bin/redocly ]; then
  echo "test_openapi_lint: Redocly CLI is not installed; run scripts/deps.sh (npm ci in tests/api)" >&2
  exit 1
fi
# Offline and quiet: no telemetry, no update check.
export REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true NO_UPDATE_NOTIFIER=1
if node_modules/.bin/redocly lint --config redocly.yaml ../../docs/openapi.yaml; then
  echo "lint: 1 passed, 0 failed"
else
  echo "lint: 0 passed, 1 failed"
  exit 1
fi
