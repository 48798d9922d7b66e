#!/usr/bin/env bash
# The whole test suite, on a fresh Debian 12 machine or a prepared one (README's test command).
# Installs what it needs (idempotent), then runs pytest; arguments go to pytest, e.g.
#   bash tests/run.sh -m "not e2e"      # the fast tier only, for the inner loop
set -Eeuo pipefail
root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

bash tests/lab/install-tools.sh

status=0
python3 -m pytest "$@" || status=$?
if [[ $status -eq 5 ]]; then
	echo "tests/run.sh: pytest collected no tests: that is a failure, not a pass" >&2
	exit 1
fi
exit "$status"
