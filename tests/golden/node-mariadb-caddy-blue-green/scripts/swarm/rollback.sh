#!/usr/bin/env bash
# Returns an environment on a Docker Swarm to an earlier release (scripts/rollback.sh hands over to
# this script when env/ENV.env sets DEPLOY_TARGET=swarm). docs/swarm.md.
#   scripts/rollback.sh ENV [VERSION]
# VERSION defaults to the release before the current one in .deploy/ENV/releases.tsv; it runs the
# exact image recorded then (by digest), updated one task at a time as a deploy is. Migrations are
# not undone (restore a backup for that: docs/swarm.md).
set -Eeuo pipefail
here=$(dirname -- "${BASH_SOURCE[0]}")
# shellcheck source=../lib/common.sh
source "$here/../lib/common.sh"
# shellcheck source=../lib/release.sh
source "$here/../lib/release.sh"
# shellcheck source=../lib/swarm.sh
source "$here/../lib/swarm.sh"

cluster_rollback "on a Swarm" "$@"
env=$ROLLBACK_ENV current=$ROLLBACK_CURRENT target=$ROLLBACK_TARGET digest=$ROLLBACK_DIGEST
swarm_init "$env"
image=$(image_of "$target")
ref=$image@$digest

log "rollback of $env: $current -> $target ($ref)"
mark=$(swarm_update_mark)
# The jobs keep the release whose migrations ran last: older migrations never run again.
read -r migrated migrated_version < <(swarm_spec migrate) || true
swarm_deploy APP_IMAGE_REF="$ref" APP_VERSION="$target" MIGRATE_IMAGE_REF="${migrated:-$ref}" MIGRATE_VERSION="${migrated_version:-$target}"
status=0
swarm_wait_app "$ref" "$mark" || status=$?
[[ $status -eq 0 ]] ||
	die "rollback of $env to $target failed: the app did not converge on it (docker service ps ${STACK}_app)"
set_current_version "$target"
record_release "$target" "$digest" - rollback
log "rolled $env back to $target (was $current)"
