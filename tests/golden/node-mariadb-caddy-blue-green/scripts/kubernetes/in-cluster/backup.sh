#!/usr/bin/env bash
# The db-backup CronJob's command (kubernetes/components/db-statefulset/): an online backup of the
# database into the volume claim db-backups, made as scripts/backup.sh makes one on a host, by the
# same lib/backups.sh and lib/db.sh (mounted beside this script from a ConfigMap): the dump as the
# backup role over the network, the row counts and schema version in its snapshot, SHA256SUMS signed
# with the environment's key, `latest` switched once complete; then the retention policy. Prints
# the backup's id. Runs in the database's image, which has the database's client tools, gzip and
# openssl (the official MariaDB image through ca-certificates, which depends on it).
#
# Settings (the CronJob's environment, defaults in brackets):
#   POD_NAMESPACE            the pod's namespace (downward API): golden-node-ENV
#   BACKUP_ROOT              the volume claim's mount [/backups]; backups go to BACKUP_ROOT/ENV
#   BACKUP_KEEP_LAST, BACKUP_KEEP_DAYS   retention [7, 14]
#   BACKUP_SIGNING_KEY_FILE  the environment's signing key [/run/secrets/backup_signing_key]
set -Eeuo pipefail
# shellcheck source=setup.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/setup.sh"
backups_init "$env"
now=$(date -u +%s)
id=$(date -u -d "@$now" +%Y%m%dT%H%M%SZ)
signing_key "$env" >/dev/null
db_use_network
make_backup "$env" "$id" "$now" ""
apply_retention "$now"
echo "$id"
