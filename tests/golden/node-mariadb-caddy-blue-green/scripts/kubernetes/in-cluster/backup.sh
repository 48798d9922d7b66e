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
here=$(dirname -- "${BASH_SOURCE[0]}")
# shellcheck source=../../lib/core.sh
source "$here/core.sh"
# shellcheck source=../../lib/db.sh
source "$here/db.sh"
# shellcheck source=../../lib/backups.sh
source "$here/backups.sh"

namespace=${POD_NAMESPACE:?set POD_NAMESPACE to the namespace (downward API: metadata.namespace)}
env=${namespace#golden-node-}
# No project checkout here: no encryption key file; the signing key is a mounted secret.
PROJECT_ROOT=/nonexistent
export BACKUP_SIGNING_KEY_FILE=${BACKUP_SIGNING_KEY_FILE:-/run/secrets/backup_signing_key}
BACKUP_DIR=${BACKUP_ROOT:-/backups}/$env
backups_init "$env"
now=$(date -u +%s)
id=$(date -u -d "@$now" +%Y%m%dT%H%M%SZ)
signing_key "$env" >/dev/null
db_use_network
make_backup "$env" "$id" "$now" ""
apply_retention "$now"
echo "$id"
