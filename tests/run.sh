#!/usr/bin/env bash
# The whole test suite, on a fresh Debian 12 machine or a prepared one (README's test command).
# Installs what it needs (idempotent), then:
#   1. the fast tier (no Docker engine needed), while the e2e lab is prepared in the background:
#      a broken render fails within two minutes; then the slow checks (no Docker engine either:
#      the static checks of every variant, updates from every release), the lab still preparing;
#   2. the e2e tier, independent stacks side by side (pytest-xdist; the tests that share a stack
#      run on one worker, see tests/conftest.py).
# With arguments, runs one pytest with them instead, e.g.
#   bash tests/run.sh -m "not e2e and not slow"      # the fast tier only, for the inner loop
#   bash tests/run.sh tests/test_e2e_release.py -k nginx
# Settings: DP_FAST_WORKERS [2], DP_E2E_WORKERS [3]: parallel pytest workers per tier.
set -Eeuo pipefail
root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

log() { printf 'tests/run.sh: %s\n' "$*" >&2; }

# pytest_tier NAME ARGS...: one pytest run; "no tests collected" is a failure, not a pass.
pytest_tier() {
	local name=$1 status=0 started=$SECONDS
	shift
	python3 -m pytest "$@" || status=$?
	log "$name: exit $status after $((SECONDS - started)) s"
	if [[ $status -eq 5 ]]; then
		log "$name: pytest collected no tests: that is a failure, not a pass"
		return 1
	fi
	return "$status"
}

bash tests/lab/install-tools.sh

if [[ $# -gt 0 ]]; then
	pytest_tier pytest "$@"
	exit
fi

lab_log=$(mktemp /tmp/dp-lab-prepare.XXXXXX.log)
bash tests/lab/prepare.sh >"$lab_log" 2>&1 &
lab_pid=$!
trap 'kill "$lab_pid" 2>/dev/null || true' EXIT

pytest_tier "fast tier" -m "not e2e and not slow" -n "${DP_FAST_WORKERS:-2}" --durations=10
pytest_tier "slow checks" -m "slow and not e2e" -n "${DP_FAST_WORKERS:-2}" --durations=5

started=$SECONDS
if ! wait "$lab_pid"; then
	cat "$lab_log" >&2
	log "the e2e lab could not be prepared (tests/lab/prepare.sh, log above)"
	exit 1
fi
log "e2e lab ready ($((SECONDS - started)) s after the fast tier)"
# Each test's seconds (tests/lab/.state/e2e-junit.xml): the tier's profile (docs/testing.md).
pytest_tier "e2e tier" -m e2e -n "${DP_E2E_WORKERS:-3}" --dist loadgroup --durations=10 \
	--junitxml "tests/lab/.state/e2e-junit.xml"
