#!/usr/bin/env bash
# Applies database migrations to an environment safely: a backup first, then migrate_command as a
# one-off container of the environment's app image (the `migrate` service).
#   scripts/migrate.sh ENV
# On failure it exits non-zero and names the backup to restore with scripts/restore.sh.
set -Eeuo pipefail
# shellcheck source=lib/common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/common.sh"

[[ $# -eq 1 ]] || die "usage: scripts/migrate.sh ENV"
env=$1
require_env "$env"
on_target "$env" "$@"
log "migrate $env: backing up first"
id=$("$PROJECT_ROOT/scripts/backup.sh" "$env" | tail -n 1) || die "the backup before migrating failed: nothing was migrated"
compose_cmd "$env"
log "migrate $env: running the migrations (backup $id taken before)"
if ! "${COMPOSE[@]}" run --rm --no-TTY migrate; then
	confirm=$(confirmation_flag "$env")
	die "migrations failed on $env; to return to the state before them: scripts/restore.sh $env $id${confirm:+ $confirm}"
fi
log "migrate $env: done (backup before it: $id)"
echo "$id"
