#!/usr/bin/env bash
# The demo: setup, start Kafka, start Sluice (all roles in one process), submit sample prompts, print replies.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
SLUICE=.venv/bin/sluice

mkdir -p .sluice
$SLUICE broker start
$SLUICE topics create
$SLUICE up > .sluice/demo-worker.log 2>&1 &
worker=$!
trap 'kill $worker 2>/dev/null; wait $worker 2>/dev/null; [ -n "${KAFKA_BOOTSTRAP:-}" ] || $SLUICE broker stop' EXIT

for prompt in "What is the capital of France?" \
              "Give me one tip for writing clear emails." \
              "What is 12 times 12?"; do
  echo
  echo "> $prompt"
  $SLUICE submit "$prompt" --tenant demo --session demo-1 --max-tokens 48 --feature demo
done
echo
echo "> What is 12 times 12?   (asked again: answered from the cache, no model call)"
$SLUICE submit "What is 12 times 12?" --tenant demo --session demo-2 --max-tokens 48 --feature demo
echo
echo "> What's 12 times 12?   (a paraphrase: the semantic cache, if the verifier agrees)"
$SLUICE submit "What's 12 times 12?" --tenant demo --session demo-3 --max-tokens 48 --feature demo
sleep 2  # let the meter count the last replies
echo
$SLUICE report --chart .sluice/demo-report.html
echo
echo "(the worker's log is in .sluice/demo-worker.log; the cost chart in .sluice/demo-report.html)"
