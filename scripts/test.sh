#!/usr/bin/env bash
# The test command: setup, a genuine Kafka broker (unless KAFKA_BOOTSTRAP names one), ruff, mypy, pytest.
# Stops the broker it started, whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

started_broker=0
if [ -z "${KAFKA_BOOTSTRAP:-}" ]; then
  export SLUICE_KAFKA_PORT="${SLUICE_TEST_KAFKA_PORT:-19092}"
  export SLUICE_KAFKA_CONTROLLER_PORT="${SLUICE_TEST_KAFKA_CONTROLLER_PORT:-19093}"
  export SLUICE_DATA_DIR="$PWD/.sluice/test"
  rm -rf "$SLUICE_DATA_DIR"
  .venv/bin/sluice broker start
  started_broker=1
  export KAFKA_BOOTSTRAP="127.0.0.1:$SLUICE_KAFKA_PORT"
fi
cleanup() {
  if [ "$started_broker" = 1 ]; then
    unset KAFKA_BOOTSTRAP
    .venv/bin/sluice broker stop || true
  fi
}
trap cleanup EXIT

echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy"
.venv/bin/mypy
echo "== pytest"
.venv/bin/python -m pytest -q "$@"
