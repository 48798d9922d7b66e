#!/usr/bin/env bash
# Restores a backup into an environment's database, losing nothing on failure.
#   scripts/restore.sh ENV BACKUP_ID [--confirm-ENV]      (BACKUP_ID may be "latest")
#
# Checks the backup's checksums first, loads it into a fresh database, and only when that load
# succeeded swaps it in (the app is stopped for the swap, seconds). The database it replaces is
# kept as app_pre_restore_<time>: drop it once you are sure. A failed restore leaves the current
# data untouched. The environments in CONFIRMED_ENVIRONMENTS (lib/common.sh) need --confirm-ENV.
set -Eeuo pipefail
# shellcheck source=lib/common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/common.sh"
# shellcheck source=lib/db.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/db.sh"
# shellcheck source=lib/backups.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/backups.sh"
usage="usage: scripts/restore.sh ENV BACKUP_ID [--confirm-ENV]"

# from_dump BACKUP_ID: the backup is checked (before anything changes); load_staging then loads it.
from_dump() {
	dir=$(resolve_backup "$1")
	what=$(basename "$dir")
	check_backup "$dir" "$env"
	[[ $(meta "$dir" DATABASE) == "$DB_ENGINE" ]] || die "$what is a $(meta "$dir" DATABASE) backup, this is $DB_ENGINE"
	load_staging() {
		log "restore $what into $env: loading into a fresh database $staging_db"
		open_backup "$dir" "$env" | db_load "$staging_db" || failed "loading the dump"
		expected=$(cat "$dir/counts.tsv")
	}
}

[[ $# -ge 2 ]] || die "$usage"
env=$1
require_env "$env"
shift
source_arg=$1
shift
confirm=$(confirmation_flag "$env")
[[ $# -le 1 ]] || die "$usage"
if [[ -n $confirm && ${1:-} != "$confirm" ]]; then
	die "restoring $env replaces its data: run again with $confirm"
fi
[[ $# -eq 0 || ( -n $confirm && $1 == "$confirm" ) ]] || die "unknown option $1"
require_backup_id "$source_arg"
backups_init "$env"
from_dump "$source_arg"

db_use_service "$env"
stamp=$(date -u +%Y%m%d%H%M%S)
staging_db="app_restore_$stamp"
previous_db="app_pre_restore_$stamp"

failed() {
	db_use_service "$env"
	db_drop "$staging_db" >/dev/null 2>&1 || true
	die "restore of $what failed while $1: $env's data is as it was"
}

db_create "$staging_db" >/dev/null || failed "creating $staging_db"
load_staging
[[ "$(db_counts "$staging_db")" == "$expected" ]] || failed "comparing row counts with the backup"
db_grant "$staging_db" || failed "giving its objects to the owner role and the app its privileges"

log "restore $what into $env: swapping it in (the app stops for a moment)"
db_app_stop "$env"
if ! db_swap "$staging_db" "$previous_db"; then
	db_app_start "$env" || true
	failed "swapping databases"
fi
db_app_start "$env" ||
	die "restored $what, but the app did not become healthy: see scripts/compose.sh $env logs ${APP_SERVICES[*]} (on a Swarm: docker service ps)"
log "restored $what into $env; the data it replaced is kept as database $previous_db"
