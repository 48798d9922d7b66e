#!/usr/bin/env bash
# Runs a command in this project's checkout on an environment's host, over SSH, from the pipeline.
#   scripts/ci/remote.sh ENV COMMIT|- COMMAND...
# The host's checkout (/srv/my-service) is moved to COMMIT first (its compose files and scripts are
# those of the release; "-" leaves it as it is), then COMMAND runs there, e.g.
#   scripts/ci/remote.sh staging 3f2c1a9 env APP_IMAGE_DIGEST=sha256:... scripts/deploy.sh staging 3f2c1a9b8d7e
# Settings (CI secrets of the environment): DEPLOY_HOST (user@host), DEPLOY_SSH_KEY (a private key
# that may log in there), DEPLOY_KNOWN_HOSTS (the host's public key line: no trust on first use).
set -Eeuo pipefail
# shellcheck source=../lib/common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/../lib/common.sh"

[[ $# -ge 3 ]] || die "usage: scripts/ci/remote.sh ENV COMMIT|- COMMAND..."
env=$1 commit=$2
shift 2
require_env "$env"
[[ $commit == - || $commit =~ ^[0-9a-f]{7,40}$ ]] || die "COMMIT is a git commit (7 to 40 hex digits) or -: $commit"
for setting in DEPLOY_HOST DEPLOY_SSH_KEY DEPLOY_KNOWN_HOSTS; do
	[[ -n ${!setting:-} ]] || die "$setting is empty: set it as a secret of the $env environment in CI"
done
require_cmd ssh "install an OpenSSH client"
keys=$(mktemp -d)
trap 'rm -rf "$keys"' EXIT
printf '%s\n' "$DEPLOY_SSH_KEY" >"$keys/id"
printf '%s\n' "$DEPLOY_KNOWN_HOSTS" >"$keys/known_hosts"
chmod 0600 "$keys/id"
printf -v command '%q ' "$@"
checkout=
[[ $commit == - ]] || checkout="git fetch --quiet origin; git checkout --quiet --detach $commit;"
ssh -i "$keys/id" -o IdentitiesOnly=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$keys/known_hosts" \
	-o BatchMode=yes "$DEPLOY_HOST" \
	"set -e; cd /srv/my-service; $checkout $command"
