#!/usr/bin/env bash
# Restores a backup into an environment's database, losing nothing on failure.
#   scripts/restore.sh ENV BACKUP_ID [--confirm-ENV]      (BACKUP_ID may be "latest")
#   scripts/restore.sh ENV --to TIME|latest [--confirm-ENV]
#       point-in-time recovery (Compose target): the newest base backup that ended before TIME
#       (scripts/base-backup.sh), replayed from the archive of the binary log up to TIME, a UTC time like
#       2026-12-04T15:04:05Z; "latest" replays all of it (after the database volume was lost).
#       The replay runs in a throwaway copy of the db service; PITR_TIMEOUT [3600] bounds it.
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
# shellcheck source=lib/pitr.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/pitr.sh"
usage="usage: scripts/restore.sh ENV BACKUP_ID|--to TIME [--confirm-ENV]"

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

# from_archive TIME: (PITR_TARGET set) the base backup to start from is found and checked; load_staging then
# recovers it in a throwaway container up to TIME and copies the result.
from_archive() {
	pitr_init "$env"
	what="the state at $1"
	container="$PROJECT_SLUG-$env-recover-$(random_secret | cut -c1-8)"
	db_image "$env"
	trap 'docker rm -f --volumes "$container" >/dev/null 2>&1 || true' EXIT
	pitr_base_for "$PITR_TARGET"
	dir=$PITR_BASE
	check_backup "$dir" "$env"
	pitr_flush "$env"
	load_staging() {
		local live=("${DB_EXEC[@]}")
		log "restore $what into $env: base backup $(basename "$dir"), replaying the archive in $container"
		(pitr_recover "$dir" "$env" "$PITR_TARGET" "$container" "$DB_IMAGE") || failed "recovering in $container"
		db_use_container "$container"
		log "restore $what into $env: recovered up to $(pitr_reached); copying it into a fresh database $staging_db"
		expected=$(db_counts "$DB_NAME")
		archive_dump | (DB_EXEC=("${live[@]}") && db_load "$staging_db") || failed "copying the recovered database"
		db_use_service "$env"
	}
}

[[ $# -ge 2 ]] || die "$usage"
env=$1
require_env "$env"
shift
to=""
if [[ $1 == --to ]]; then
	[[ $# -ge 2 ]] || die "--to needs a time: a UTC time like $(date -u +%Y-%m-%dT%H:%M:%SZ), or latest"
	to=$2
	shift
fi
source_arg=$1
shift
confirm=$(confirmation_flag "$env")
[[ $# -le 1 ]] || die "$usage"
if [[ -n $confirm && ${1:-} != "$confirm" ]]; then
	die "restoring $env replaces its data: run again with $confirm"
fi
[[ $# -eq 0 || ( -n $confirm && $1 == "$confirm" ) ]] || die "unknown option $1"
if [[ -n $to ]]; then pitr_target "$source_arg"; else require_backup_id "$source_arg"; fi
backups_init "$env"
if [[ -n $to ]]; then from_archive "$source_arg"; else from_dump "$source_arg"; fi

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
# After a lost volume the database is a new cluster, which no base backup covers yet: later
# recoveries need one of it.
if [[ -n $to ]] && ! grep -qx "SYSTEM_ID=$(archive_cluster)" "$BASE_DIR"/*/meta.env 2>/dev/null; then
	log "restore: $env now runs a new cluster: taking its first base backup"
	"$PROJECT_ROOT/scripts/base-backup.sh" "$env" >/dev/null || die "restored $what, but the base backup of the new cluster failed: run scripts/base-backup.sh $env"
fi
