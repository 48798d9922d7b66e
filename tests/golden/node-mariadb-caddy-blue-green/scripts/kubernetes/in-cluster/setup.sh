# shellcheck shell=bash
# What the CronJobs' backup.sh and verify-backup.sh share: the project's own libraries (mounted
# beside them from the ConfigMap db-backup-scripts), then `env` from the pod's namespace and
# BACKUP_DIR, the environment's backups in the volume claim. Sets nothing else, touches nothing.
# Sourced, never run.
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
