#!/usr/bin/env bash
# `make demo`: local stack + topics + worker + simulator. Ctrl-C stops everything this
# script started (and only that), then prints what ran.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
STACK="deploy/local/stack.sh"
PORT="${SALESOPS_WEB_PORT:-6066}"
LOGS="$ROOT/.local/demo"
mkdir -p "$LOGS"
echo "demo: overview at http://127.0.0.1:$PORT/ once it is up (starting Kafka, Redis, the worker, the simulator)"

stack_started=0
if ! bash "$STACK" status >/dev/null 2>&1; then
  stack_started=1
fi
bash "$STACK" up
if ! command -v redis-server >/dev/null 2>&1; then
  echo "demo: redis-server is not installed: running without the Redis sink." >&2
  echo "demo: install it with: sudo apt-get install redis-server" >&2
  export SALESOPS_REDIS_URL=""
fi

worker_pid="" sim_pid=""
cleanup() {
  trap - INT TERM EXIT
  echo
  echo "demo: stopping..."
  [[ -n $sim_pid ]] && kill -TERM "$sim_pid" 2>/dev/null && wait "$sim_pid" 2>/dev/null || true
  [[ -n $worker_pid ]] && kill -TERM "$worker_pid" 2>/dev/null && wait "$worker_pid" 2>/dev/null || true
  if [[ $stack_started == 1 ]]; then bash "$STACK" down; fi
  echo "demo: stopped (worker log: $LOGS/worker.log)"
}
trap cleanup INT TERM EXIT

# The worker refuses to start without a respondent secret. The demo keeps one in
# .local/respondent-secret (made once, private to this user), so restarts of the demo key
# respondents the same way; an exported SALESOPS_RESPONDENT_SECRET wins.
SECRET_FILE="$ROOT/.local/respondent-secret"
if [[ -z ${SALESOPS_RESPONDENT_SECRET:-} ]]; then
  if [[ ! -s $SECRET_FILE ]]; then
    (umask 077 && .venv/bin/python -c 'import secrets; print(secrets.token_hex(32))' >"$SECRET_FILE")
    echo "demo: generated a respondent secret in $SECRET_FILE"
  fi
  SALESOPS_RESPONDENT_SECRET="$(cat "$SECRET_FILE")"
  export SALESOPS_RESPONDENT_SECRET
fi

.venv/bin/salesops topics
SALESOPS_WEB_PORT="$PORT" .venv/bin/salesops worker >"$LOGS/worker.log" 2>&1 &
worker_pid=$!
echo "demo: worker pid $worker_pid, waiting for http://127.0.0.1:$PORT/metrics ..."
for _ in $(seq 1 120); do
  if curl -fs "http://127.0.0.1:$PORT/metrics" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$worker_pid" 2>/dev/null; then
    echo "demo: the worker exited; last lines of $LOGS/worker.log:" >&2
    tail -n 40 "$LOGS/worker.log" >&2
    exit 1
  fi
  sleep 0.5
done
.venv/bin/salesops simulate --loop --survey-waves 9 --rate "${SALESOPS_DEMO_RATE:-200}" >"$LOGS/simulator.log" 2>&1 &
sim_pid=$!
cat <<MSG

  salesops demo is running (Ctrl-C stops it)
    overview    http://127.0.0.1:$PORT/   <- open this in a browser: charts of every view below
    metrics     http://127.0.0.1:$PORT/metrics
    readiness   http://127.0.0.1:$PORT/readyz
    pipeline    http://127.0.0.1:$PORT/api/pipeline
    funnel      http://127.0.0.1:$PORT/api/funnel?period=last-30d
    aging       http://127.0.0.1:$PORT/api/aging
    movement    http://127.0.0.1:$PORT/api/movement
    alerts      http://127.0.0.1:$PORT/api/alerts?status=FIRING
    eNPS        http://127.0.0.1:$PORT/api/enps?window=30d
    logs        $LOGS/worker.log, $LOGS/simulator.log

MSG
if [[ -n ${SALESOPS_API_TOKEN:-} ]]; then
  echo "  SALESOPS_API_TOKEN is set: the overview and /api need 'Authorization: Bearer <token>'"
  echo "  (a browser gets it from a proxy that adds the header)"
  echo
fi
wait "$worker_pid"
