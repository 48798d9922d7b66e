#!/usr/bin/env bash
# The db-verify-backup CronJob's command (kubernetes/components/db-statefulset/): the newest backup
# in the volume claim db-backups checked as scripts/verify-backup.sh checks one on a host, by the
# same lib/backups.sh and lib/db.sh: its signature and checksums, then a restore into a throwaway
# server started in this container (the image's own entrypoint, an emptyDir for its data, a
# password nobody else has; nothing of the environment's database) and the row counts and schema
# version compared with the backup's. Marks the backup `verified` (retention keeps the newest
# verified one) or writes `verify-failed` with the reason and exits 1 (the Job fails).
#
# Settings (the CronJob's environment): POD_NAMESPACE, BACKUP_ROOT [/backups],
# BACKUP_SIGNING_KEY_FILE [/run/secrets/backup_signing_key], BACKUP_ID [latest].
set -Eeuo pipefail
# shellcheck source=setup.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/setup.sh"
require_backup_id "${BACKUP_ID:-latest}"
backups_init "$env"
dir=$(resolve_backup "${BACKUP_ID:-latest}")
id=$(basename "$dir")

fail() {
	printf '%s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$1" >"$dir/verify-failed"
	rm -f "$dir/verified"
	die "backup $id FAILED verification: $1"
}

log "verify $id of $env: signature and checksums"
problem=$(check_backup "$dir" "$env" 2>&1 >/dev/null) || fail "${problem##*error: }"
log "verify $id of $env: restoring into a throwaway server in this pod"
db_start_local
# The server's first error says why (its last line is only "Aborting").
db_wait_ready || fail "the throwaway database did not start: $(grep -m 1 -E 'ERROR|FATAL' /tmp/db-server.log 2>/dev/null || tail -n 1 /tmp/db-server.log 2>/dev/null)"
problem=$(restore_differs "$dir" "$env") || fail "$problem"
date -u +%Y-%m-%dT%H:%M:%SZ >"$dir/verified"
rm -f "$dir/verify-failed"
log "backup $id of $env verified: $(wc -l <"$dir/counts.tsv") tables, row counts and schema version $(meta "$dir" SCHEMA_VERSION) match"
