#!/usr/bin/env bash
# Stand-in for the official postgres image's entrypoint: the subset of its contract that the
# rendered stacks use (POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB and their *_FILE forms,
# PGDATA, /docker-entrypoint-initdb.d, running as root or as the postgres user).
set -Eeuo pipefail

file_env() {
	local var=$1 file_var="${1}_FILE" default=${2:-}
	if [[ -n "${!var:-}" && -n "${!file_var:-}" ]]; then
		echo "error: both $var and $file_var are set" >&2
		exit 1
	fi
	local value=$default
	if [[ -n "${!var:-}" ]]; then value=${!var}; elif [[ -n "${!file_var:-}" ]]; then value=$(<"${!file_var}"); fi
	export "$var"="$value"
	unset "$file_var"
}

if [[ ${1:-} == postgres && $(id -u) == 0 ]]; then
	mkdir -p "$PGDATA" && chown postgres:postgres "$PGDATA" && chmod 0700 "$PGDATA"
	exec gosu postgres bash "${BASH_SOURCE[0]}" "$@"
fi

if [[ ${1:-} == postgres && ! -s "$PGDATA/PG_VERSION" ]]; then
	file_env POSTGRES_PASSWORD
	file_env POSTGRES_USER postgres
	file_env POSTGRES_DB "$POSTGRES_USER"
	[[ -n "$POSTGRES_PASSWORD" ]] || { echo "error: POSTGRES_PASSWORD is not set" >&2; exit 1; }
	mkdir -p "$PGDATA" && chmod 0700 "$PGDATA"
	pwfile=$(mktemp)
	printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
	initdb --username="$POSTGRES_USER" --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 -D "$PGDATA" >/dev/null
	rm -f "$pwfile"
	echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
	echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
	# Temporary server on the socket only, as the official image does while it initialises.
	pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
	if [[ "$POSTGRES_DB" != postgres ]]; then
		psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres -c "CREATE DATABASE \"$POSTGRES_DB\""
	fi
	for f in /docker-entrypoint-initdb.d/*; do
		# shellcheck disable=SC1090  # init scripts are supplied at run time
		case $f in
		*.sh) echo "running $f" && . "$f" ;;
		*.sql) echo "running $f" && psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" -f "$f" ;;
		esac
	done
	pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
	echo "stand-in postgres: database initialised"
fi

exec "$@"
