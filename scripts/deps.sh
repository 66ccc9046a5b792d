#!/usr/bin/env bash
# Install what building, running and testing Drover needs on Debian 12 (as root).
# Idempotent and quiet when everything is present.  Usage: scripts/deps.sh [run|test]
set -euo pipefail
mode=${1:-test}

run_pkgs=(build-essential cmake pkg-config libssl-dev libargon2-dev libsqlite3-dev libjansson-dev)
test_pkgs=(clang libclang-rt-dev python3 python3-paho-mqtt mosquitto mosquitto-clients nodejs npm clang-format openssl chromium)

want=("${run_pkgs[@]}")
[ "$mode" = test ] && want+=("${test_pkgs[@]}")

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node may come from outside Debian (nodesource, nvm): accept any working node/npm.
if command -v node >/dev/null && command -v npm >/dev/null; then
  missing=("${missing[@]/nodejs}"); missing=("${missing[@]/npm}")
fi
read -r -a missing <<<"${missing[*]:-}"
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The Debian mosquitto package starts a system broker on 1883; tests run their own.
if [ "$mode" = test ] && command -v systemctl >/dev/null && systemctl is-active --quiet mosquitto 2>/dev/null; then
  systemctl stop mosquitto || true
fi
# MQTT.js for the JavaScript client tests, pinned by tests/js/package-lock.json.
if [ "$mode" = test ] && [ -f tests/js/package.json ] && [ ! -d tests/js/node_modules/mqtt ]; then
  (cd tests/js && npm ci --no-audit --no-fund --loglevel=error)
fi
# Redocly CLI for the OpenAPI lint of docs/openapi.yaml, pinned by tests/api/package-lock.json.
if [ "$mode" = test ] && [ -f tests/api/package.json ] && [ ! -d tests/api/node_modules/@redocly/cli ]; then
  (cd tests/api && npm ci --no-audit --no-fund --loglevel=error)
fi
