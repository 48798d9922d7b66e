#!/usr/bin/env bash
# The weekly template update, runnable locally: `copier update` with the recorded answers into a
# new branch, committed; prints the branch name (nothing when already up to date). Conflicts with
# local edits are left inline (as conflict markers) for the review of the pull/merge request.
#   scripts/ci/copier-update.sh
# Copier runs with --trust: this template computes settings in its Jinja extensions (extensions/).
set -Eeuo pipefail
# shellcheck source=../lib/common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/../lib/common.sh"

[[ $# -eq 0 ]] || die "usage: scripts/ci/copier-update.sh"
require_cmd git "install git"
require_cmd python3 "install Python 3"
cd "$PROJECT_ROOT"
[[ -z $(git status --porcelain --untracked-files=no) ]] || die "the checkout has uncommitted changes: commit or stash them first"
tools=${CI_TOOLS_DIR:-$PROJECT_ROOT/.ci-tools}/copier
[[ -x $tools/bin/copier ]] || python3 -m venv "$tools" || die "cannot create a virtualenv in $tools"
"$tools/bin/pip" install --quiet --disable-pip-version-check \
	copier==9.19.1 \
	copier-template-extensions==0.3.4
before=$(sed -n 's/^_commit: //p' .copier-answers.yml)
"$tools/bin/copier" update --defaults --trust --conflict inline >&2 || die "copier update failed (its output above)"
if [[ -z $(git status --porcelain) ]]; then
	log "already up to date with the template ($before)"
	exit 0
fi
after=$(sed -n 's/^_commit: //p' .copier-answers.yml)
branch="template-update/${after:-$(date -u +%Y%m%d)}"
git switch --quiet --create "$branch"
git add --all
git -c user.name="${GIT_AUTHOR_NAME:-template-update}" -c user.email="${GIT_AUTHOR_EMAIL:-template-update@localhost}" \
	commit --quiet --message "Update from the deployment template: $before -> $after"
log "committed the update $before -> $after on $branch"
echo "$branch"
