#!/usr/bin/env bash
# Applies database migrations to an environment on a Docker Swarm (scripts/migrate.sh hands over to
# this script when env/ENV.env says DEPLOY_TARGET=swarm): a backup first, then the stack's migrate
# job runs again, with the release it was last deployed with. docs/swarm.md.
#   scripts/migrate.sh ENV
# On failure it exits non-zero and names the backup to restore with scripts/restore.sh.
set -Eeuo pipefail
here=$(dirname -- "${BASH_SOURCE[0]}")
# shellcheck source=../lib/common.sh
source "$here/../lib/common.sh"
# shellcheck source=../lib/swarm.sh
source "$here/../lib/swarm.sh"

[[ $# -eq 1 ]] || die "usage: scripts/migrate.sh ENV"
env=$1
require_env "$env"
swarm_init "$env"
swarm_service migrate || die "the $env stack has no migrate job: deploy first (scripts/deploy.sh $env VERSION), or set migrate_command"
log "migrate $env: backing up first"
id=$("$PROJECT_ROOT/scripts/backup.sh" "$env" | tail -n 1) || die "the backup before migrating failed: nothing was migrated"
log "migrate $env: running the migrations (backup $id taken before)"
"${SWARM[@]}" service update --detach --force "${STACK}_migrate" >/dev/null
if ! (swarm_wait_job migrate); then
	confirm=$(confirmation_flag "$env")
	die "migrations failed on $env; to return to the state before them: scripts/restore.sh $env $id${confirm:+ $confirm}"
fi
log "migrate $env: done (backup before it: $id)"
echo "$id"
