#!/usr/bin/env bash
# `make bench`: make sure the venv is installed, start the local stack if it is not running,
# run the worker benchmarks (tests/bench/bench_worker.py: end-to-end rate, the naive Faust
# app, latency, memory per open deal, restart-to-ready with both stores), stop the stack
# only if this script started it. Results: bench-results/latest.json (git-ignored) and
# markdown tables on stdout. Arguments go to the bench, e.g.
# `bash deploy/local/run-bench.sh --quick` or `make bench BENCH_ARGS=--quick`.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
STACK="deploy/local/stack.sh"
PY=".venv/bin/python"

if [[ ! -x "$PY" ]] || ! "$PY" -c 'import faust, aiokafka, fastavro' 2>/dev/null; then
  make install
fi

# The bench needs Kafka only. Stop the stack afterwards only when nothing of it ran
# before: a broker or Redis someone else started is never stopped here.
status="$(bash "$STACK" status 2>&1 || true)"
started=0
if ! grep -q '^kafka: running' <<<"$status"; then
  if ! grep -q '^redis: running' <<<"$status"; then started=1; fi
  bash "$STACK" up
fi
cleanup() {
  if [[ $started == 1 ]]; then
    bash "$STACK" down || true
  elif ! grep -q '^kafka: running' <<<"$status"; then
    echo "run-bench: left the stack running (Redis was already up); 'make down' stops it" >&2
  fi
}
trap cleanup EXIT

# The figures are only as good as the machine is quiet: say so when it is not.
read -r load _ < /proc/loadavg
cpus="$(nproc)"
if awk -v l="$load" -v c="$cpus" 'BEGIN { exit !(l > c / 2) }'; then
  echo "run-bench: load average $load on $cpus CPUs: other work will lower the figures" >&2
fi

mkdir -p bench-results
"$PY" -m tests.bench.bench_worker "$@"
