#!/usr/bin/env bash
# `make test`: start the local stack if it is not running, run every test suite
# (unit, integration, e2e, alert rules), stop what this script started.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
STACK="deploy/local/stack.sh"
started=0
if ! bash "$STACK" status >/dev/null 2>&1; then
  started=1
  SALESOPS_REQUIRE_REDIS=1 bash "$STACK" up
fi
cleanup() {
  if [[ $started == 1 ]]; then bash "$STACK" down || true; fi
}
trap cleanup EXIT
bash deploy/prometheus/test.sh
# Integration tests must not be skipped in CI: the fixtures fail (not skip) when the
# stack is unreachable, and -rs lists any skip with its reason.
.venv/bin/python -m pytest tests -rs -q -p no:cacheprovider "$@"
