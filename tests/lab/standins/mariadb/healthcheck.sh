#!/usr/bin/env bash
# Stand-in for the official image's healthcheck.sh: --connect (a TCP connection as the healthcheck
# user, so it fails while the init server runs without networking) and --innodb_initialized.
set -Eeuo pipefail
client=(mariadb --defaults-extra-file=/var/lib/mysql/.my-healthcheck.cnf --protocol=tcp -h 127.0.0.1 -N -B)
for check in "$@"; do
	case $check in
	--connect) "${client[@]}" -e 'SELECT 1' >/dev/null ;;
	--innodb_initialized)
		[[ $("${client[@]}" -e "SELECT 1 FROM information_schema.ENGINES WHERE engine='InnoDB' AND support IN ('YES','DEFAULT')") == 1 ]]
		;;
	*) echo "healthcheck.sh (stand-in): unknown check $check" >&2 && exit 1 ;;
	esac
done
