#!/usr/bin/env bash
# The main job on a demo database: README's first command.
#
#   bash examples/demo.sh
#
# Builds ducksafe (the first build compiles DuckDB: about 52 minutes on a fresh 2-core machine, once per machine),
# creates ./demo with a simulation-shaped database (9,016 employees, 42,331 events), then runs
# the pre-run hook exactly as a workflow runner would and shows what it left behind.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --quiet
bin="${CARGO_TARGET_DIR:-target}/debug/ducksafe"
bin="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"

mkdir -p demo
cd demo
echo "== ducksafe init --demo"
"$bin" init --demo

echo
echo "== the pre-run hook: one JSON request on stdin, one JSON line on stdout"
request='{"protocol_version": 1, "event": "pre_run", "request_id": "demo-run-1", "config": {"path": "config.yaml"}}'
echo "request:  $request"
set +e
response=$(echo "$request" | "$bin" hook)
code=$?
set -e
echo "response: $response"
echo "exit code: $code"
if command -v python3 >/dev/null; then
  echo "$response" | python3 -c 'import json,sys; r=json.load(sys.stdin); print("decision:", r["decision"], "|", r["reason"]); print("rollback:", " ".join(r["rollback"]["command"]) if r.get("rollback") else "-")'
fi

echo
echo "== ducksafe list"
"$bin" list
echo
echo "== ducksafe verify --all"
"$bin" verify --all
exit "$code"
