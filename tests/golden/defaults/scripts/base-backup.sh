#!/usr/bin/env bash
# Base backup of an environment's PostgreSQL cluster, the starting point of point-in-time recovery
# (scripts/restore.sh ENV --to TIME): with the archive of the WAL, any moment from its end onwards
# can be recovered. Online: the app keeps running.
#   scripts/base-backup.sh ENV          prints the base backup's id as its last line
#
# backups/ENV/base/ID/ holds the backup (pg_basebackup, gzipped; gpg when a key is set), meta.env (the
# cluster, the first WAL file it needs, when it ended) and SHA256SUMS with its signature, written
# under a temporary name and renamed into place when complete. Then the retention policy of the
# dumps applies to base backups, and what no kept base backup needs is deleted from the archive.
#
# Settings (environment variables, defaults in brackets): BACKUP_DIR, BACKUP_KEEP_LAST,
# BACKUP_KEEP_DAYS, BACKUP_KEY_FILE, BACKUP_RESTIC_REPOSITORY, RESTIC_PASSWORD_FILE, as for
# scripts/backup.sh (the off-host copy also takes the archive).
set -Eeuo pipefail
# shellcheck source=lib/common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/common.sh"
# shellcheck source=lib/db.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/db.sh"
# shellcheck source=lib/backups.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/backups.sh"
# shellcheck source=lib/pitr.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/pitr.sh"

[[ $# -eq 1 ]] || die "usage: scripts/base-backup.sh ENV"
env=$1
require_env "$env"
backups_init "$env"
pitr_init "$env"
now=$(date -u +%s)
id=$(date -u -d "@$now" +%Y%m%dT%H%M%SZ)
require_cmd gzip "needed to compress the base backup"
ensure_signing_key "$env"
signing_key "$env" >/dev/null
key_file=$(backup_key_file "$env")
[[ -z $key_file ]] || require_cmd gpg "needed to encrypt backups (BACKUP_KEY_FILE is set)"
db_use_service "$env"
"${DB_EXEC[@]}" true 2>/dev/null || die "the $env database is not running: start it with scripts/compose.sh $env up -d --wait"
archive_check "$env"
begin_backup "$BASE_DIR" "$id"
work=$WORK

cluster=$(archive_cluster)
# At or before the backup's own start: the archive keeps everything from here on.
start=$(archive_start)
dump=$BASE_FILE
[[ -z $key_file ]] || dump=$dump.gpg
log "base backup $id of $env: cluster $cluster, from WAL $start"
archive_base | compress_to "$work/$dump" "$key_file" || die "the base backup failed: no base backup was made"
ended=$(date -u +%s)
cat >"$work/meta.env" <<META
ID=$id
ENVIRONMENT=$env
DATABASE=$DB_ENGINE
KIND=base
CREATED=$(date -u -d "@$now" +%Y-%m-%dT%H:%M:%SZ)
ENDED=$(date -u -d "@$ended" +%Y-%m-%dT%H:%M:%SZ)
ENDED_EPOCH=$ended
ENCRYPTED=$([[ -n $key_file ]] && echo yes || echo no)
DUMP=$dump
SYSTEM_ID=$cluster
$ARCHIVE_START_KEY=$start
META
publish_backup "$BASE_DIR" "$id" "$env" "$dump" meta.env
log "base backup $id of $env complete: $(du -sh "$BASE_DIR/$id/$dump" | cut -f1)"
record_metric "$env" base_backup_last_success_timestamp_seconds "$ended"

BACKUP_DIR=$BASE_DIR apply_retention "$now"
pitr_prune "$env"
archive_trim_server
push_wal_off_host "$env" "$id"
echo "$id"
