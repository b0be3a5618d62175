#!/usr/bin/env bash
# `make bench`: make sure the venv is installed, start a broker of the bench's own with an
# empty log, run the worker benchmarks (tests/bench/bench_worker.py: end-to-end rate, the
# naive Faust app, latency, memory per open deal, restart-to-ready with both stores), and
# stop that broker again. Results: bench-results/latest.json (git-ignored) and markdown
# tables on stdout. Arguments go to the bench, e.g.
# `bash deploy/local/run-bench.sh --quick` or `make bench BENCH_ARGS=--quick`.
#
# Why a broker of its own: the figures depend on the broker's state. The development
# broker (`make up`) collects the topics of every test run; with about 3,000 of them Kafka
# used a third of a core while idle and the worker's rate fell by up to 20 %. The bench
# broker starts from an empty log every time (state in .local/bench, the jars shared with
# the local stack), so two runs on the same machine compare. It listens on 127.0.0.1 only.
#
#   SALESOPS_BENCH_KAFKA_PORT             the bench broker's listener            (19392)
#   SALESOPS_BENCH_KAFKA_CONTROLLER_PORT  its KRaft controller listener          (19393)
#   SALESOPS_BENCH_DIR                    the bench broker's state, deleted at exit (<repo>/.local/bench)
#   SALESOPS_BENCH_BOOTSTRAP              bench this running broker instead (host:port)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
STACK="deploy/local/stack.sh"
PY=".venv/bin/python"

if [[ ! -x "$PY" ]] || ! "$PY" -c 'import faust, aiokafka, fastavro' 2>/dev/null; then
  make install
fi

# (not SALESOPS_KAFKA_BOOTSTRAP: the Makefile exports it with the local stack's address)
if [[ -n "${SALESOPS_BENCH_BOOTSTRAP:-}" ]]; then
  export SALESOPS_KAFKA_BOOTSTRAP="$SALESOPS_BENCH_BOOTSTRAP"
else
  port="${SALESOPS_BENCH_KAFKA_PORT:-19392}"
  export SALESOPS_LOCAL_DIR="${SALESOPS_BENCH_DIR:-$ROOT/.local/bench}" SALESOPS_LOCAL_KAFKA_PORT="$port"
  export SALESOPS_LOCAL_KAFKA_CONTROLLER_PORT="${SALESOPS_BENCH_KAFKA_CONTROLLER_PORT:-19393}"
  bash "$STACK" kafka-down >/dev/null 2>&1 || true # a broker left by an interrupted run
  rm -rf "$SALESOPS_LOCAL_DIR"
  cleanup() {
    bash "$STACK" kafka-down || true
    rm -rf "$SALESOPS_LOCAL_DIR"
  }
  trap cleanup EXIT
  # stack.sh refuses a port in use and says which; these are the bench's names for them
  if ! bash "$STACK" kafka-up; then
    echo "run-bench: the bench broker did not start; choose free ports with SALESOPS_BENCH_KAFKA_PORT /" \
      "SALESOPS_BENCH_KAFKA_CONTROLLER_PORT, or bench a running broker with SALESOPS_BENCH_BOOTSTRAP" >&2
    exit 2
  fi
  export SALESOPS_KAFKA_BOOTSTRAP="127.0.0.1:$port"
fi

# The figures are only as good as the machine is quiet: say so when it is not.
read -r load _ < /proc/loadavg
cpus="$(nproc)"
if awk -v l="$load" -v c="$cpus" 'BEGIN { exit !(l > c / 2) }'; then
  echo "run-bench: load average $load on $cpus CPUs: other work will lower the figures" >&2
fi

mkdir -p bench-results
"$PY" -m tests.bench.bench_worker "$@"
