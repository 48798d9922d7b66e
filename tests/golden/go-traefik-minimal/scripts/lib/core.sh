# shellcheck shell=bash
# The helpers every script needs, wherever it runs: logging, the error report, a safe umask, and
# writing files. Sourced by lib/common.sh (the scripts on the operator's host), and by the scripts
# that run inside the database's image (a Kubernetes CronJob's backup and its verification).

SCRIPT_NAME=$(basename -- "$0" .sh)
# What the scripts create is the operator's only (backups, secrets, release records: 0600 files,
# 0700 directories), whatever the caller's umask; what a container reads is opened up explicitly
# (seal_secret, write_atomically, shared_dir).
umask 077

log() { printf '%s %s: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$SCRIPT_NAME" "$*" >&2; }

# An unexpected failure (not one a script reports with die) names the file, line and command.
on_error() {
	local status=$?
	# Only the script's own shell reports: a subshell's failure reaches it as its exit status (and a
	# background job's expected failure, e.g. an incomplete dump, is the script's to word).
	[[ -z ${ERROR_REPORTED:-} && $BASHPID == "$$" ]] || return "$status"
	ERROR_REPORTED=1
	log "error: ${BASH_SOURCE[1]##*/}:${BASH_LINENO[0]}: '$BASH_COMMAND' exited $status"
}
trap on_error ERR
die() {
	log "error: $*"
	exit 1
}

require_cmd() {
	command -v "$1" >/dev/null 2>&1 || die "$1 is not installed: $2"
}

# shared_dir DIR: DIR exists and is 0755, for a container that reads it through a bind mount (its
# user is not the operator).
shared_dir() {
	mkdir -p "$1"
	chmod 0755 "$1"
}

# write_atomically FILE: standard input becomes FILE's content in one rename (readers see the old
# or the new file, never a partial one).
write_atomically() {
	local tmp
	tmp=$(mktemp "$1.XXXXXX")
	cat >"$tmp"
	chmod 0644 "$tmp"
	mv -f "$tmp" "$1"
}
