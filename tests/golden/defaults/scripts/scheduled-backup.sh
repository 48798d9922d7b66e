#!/usr/bin/env bash
# The scheduled job (systemd timer or cron): a backup, then its verification; on the Compose target
# also a base backup for point-in-time recovery and a replay of its archive (verify-archive.sh). Exits non-zero if
# either fails, which marks the systemd unit failed / mails cron's MAILTO; metrics/ENV/backup.prom
# feeds the BackupFailed alerts.
#   scripts/scheduled-backup.sh ENV
set -Eeuo pipefail
# shellcheck source=lib/common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/common.sh"
# shellcheck source=lib/backups.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/backups.sh"

[[ $# -eq 1 ]] || die "usage: scripts/scheduled-backup.sh ENV"
require_env "$1"
backups_init "$1"
if ! id=$("$PROJECT_ROOT/scripts/backup.sh" "$1" | tail -n 1); then
	record_metric "$1" backup_last_run_ok 0
	die "scheduled backup of $1 failed"
fi
if ! "$PROJECT_ROOT/scripts/verify-backup.sh" "$1" "$id"; then
	record_metric "$1" backup_last_run_ok 0
	die "scheduled backup $id of $1 was made but failed verification"
fi
if [[ $(deploy_target "$1") == compose ]]; then
	if ! "$PROJECT_ROOT/scripts/base-backup.sh" "$1" >/dev/null || ! "$PROJECT_ROOT/scripts/verify-archive.sh" "$1"; then
		record_metric "$1" backup_last_run_ok 0
		die "scheduled base backup of $1 failed, or its archive does not replay"
	fi
fi
record_metric "$1" backup_last_run_ok 1
