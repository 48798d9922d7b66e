#!/usr/bin/env bash
# Online backup of an environment's mariadb database, without stopping the app.
#   scripts/backup.sh ENV            prints the backup id as its last line
#
# A backup is a directory backups/ENV/ID/ with the dump (plain SQL, gzip, gpg when a key is set),
# every table's row count in the dump's snapshot, the schema version, and SHA256SUMS with its signature
# (SHA256SUMS.sig, by secrets/ENV/backup_signing_key; verify and restore check it). It is written under a
# temporary name and renamed into place only when complete; backups/ENV/latest then points to it.
# Afterwards, retention deletes what the policy no longer keeps (never the newest verified backup).
#
# Settings (environment variables, defaults in brackets):
#   BACKUP_DIR            where backups go [backups/ENV]
#   BACKUP_KEEP_LAST      always keep this many newest backups [7]
#   BACKUP_KEEP_DAYS      also keep every backup younger than this many days [14]
#   BACKUP_KEY_FILE       encrypt with gpg (AES256) using this passphrase file [secrets/ENV/backup_key if present]
#   BACKUP_RESTIC_REPOSITORY  also copy the backup to this restic repository (off-host) [unset]
#   RESTIC_PASSWORD_FILE  its password file [secrets/ENV/restic_password]
#   BACKUP_NOW            the time to use, in epoch seconds [now]; for replaying retention decisions
set -Eeuo pipefail
# shellcheck source=lib/common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/common.sh"
# shellcheck source=lib/db.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/db.sh"
# shellcheck source=lib/backups.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/backups.sh"

[[ $# -eq 1 ]] || die "usage: scripts/backup.sh ENV"
env=$1
require_env "$env"
backups_init "$env"
now=${BACKUP_NOW:-$(date -u +%s)}
id=$(date -u -d "@$now" +%Y%m%dT%H%M%SZ)
require_cmd gzip "needed to compress the dump"
# The signing key is made on first need too (a project updated from before signed backups).
ensure_signing_key "$env"
signing_key "$env" >/dev/null
key_file=$(backup_key_file "$env")
[[ -z $key_file ]] || require_cmd gpg "needed to encrypt backups (BACKUP_KEY_FILE is set)"
db_use_service "$env"
"${DB_EXEC[@]}" true 2>/dev/null || die "the $env database is not running: start it with scripts/compose.sh $env up -d --wait"
make_backup "$env" "$id" "$now" "$key_file"
record_metric "$env" backup_last_success_timestamp_seconds "$now"

apply_retention "$now"
push_off_host "$env" "$id"
echo "$id"
