#!/usr/bin/env bash
# Stand-in for the official mariadb image's entrypoint: the subset of its contract that the
# rendered stacks use (MARIADB_USER, MARIADB_PASSWORD, MARIADB_DATABASE, MARIADB_ROOT_PASSWORD and
# their *_FILE forms, a healthcheck user for healthcheck.sh, running as root or as mysql).
set -Eeuo pipefail
DATADIR=/var/lib/mysql
SOCKET=/run/mysqld/mysqld.sock

file_env() {
	local var=$1 file_var="${1}_FILE" value=${2:-}
	if [[ -n "${!var:-}" ]]; then value=${!var}; elif [[ -n "${!file_var:-}" ]]; then value=$(<"${!file_var}"); fi
	export "$var"="$value"
	unset "$file_var"
}

if [[ ${1:-} == mariadbd && $(id -u) == 0 ]]; then
	chown -R mysql:mysql "$DATADIR" /run/mysqld
	exec gosu mysql bash "${BASH_SOURCE[0]}" "$@"
fi

if [[ ${1:-} == mariadbd && ! -d "$DATADIR/mysql" ]]; then
	file_env MARIADB_ROOT_PASSWORD
	file_env MARIADB_USER
	file_env MARIADB_PASSWORD
	file_env MARIADB_DATABASE
	[[ -n "$MARIADB_ROOT_PASSWORD" ]] || { echo "error: MARIADB_ROOT_PASSWORD is not set" >&2; exit 1; }
	# No --user: it runs as the server's user already, and --user would chown the directory, which
	# a non-root process cannot do where a volume's root belongs to root (Kubernetes' fsGroup).
	mariadb-install-db --datadir="$DATADIR" --skip-test-db --auth-root-authentication-method=normal >/dev/null
	# Temporary server without networking while users and the database are made.
	mariadbd --skip-networking --socket="$SOCKET" --datadir="$DATADIR" &
	pid=$!
	for _ in $(seq 60); do mariadb-admin --socket="$SOCKET" ping >/dev/null 2>&1 && break; sleep 1; done
	health_password=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
	# Like the official image: root only as root@localhost and root@'%', no anonymous users
	# (install-db also makes password-less root@127.0.0.1, root@::1, root@<hostname>, which
	# would shadow root@'%').
	mariadb --socket="$SOCKET" -uroot -N -e "SELECT CONCAT('DROP USER ', QUOTE(User), '@', QUOTE(Host), ';') FROM mysql.user
		WHERE User = '' OR (User = 'root' AND Host <> 'localhost')" | mariadb --socket="$SOCKET" -uroot
	{
		echo "ALTER USER 'root'@'localhost' IDENTIFIED BY '${MARIADB_ROOT_PASSWORD}';"
		echo "CREATE USER 'root'@'%' IDENTIFIED BY '${MARIADB_ROOT_PASSWORD}'; GRANT ALL ON *.* TO 'root'@'%' WITH GRANT OPTION;"
		echo "CREATE USER 'healthcheck'@'127.0.0.1' IDENTIFIED BY '${health_password}';"
		echo "CREATE USER 'healthcheck'@'localhost' IDENTIFIED BY '${health_password}';"
		if [[ -n "$MARIADB_DATABASE" ]]; then echo "CREATE DATABASE IF NOT EXISTS \`${MARIADB_DATABASE}\`;"; fi
		if [[ -n "$MARIADB_USER" ]]; then
			echo "CREATE USER '${MARIADB_USER}'@'%' IDENTIFIED BY '${MARIADB_PASSWORD}';"
			[[ -n "$MARIADB_DATABASE" ]] && echo "GRANT ALL ON \`${MARIADB_DATABASE}\`.* TO '${MARIADB_USER}'@'%';"
		fi
		echo "FLUSH PRIVILEGES;"
	} | mariadb --socket="$SOCKET" -uroot
	printf '[mariadb-client]\nport=3306\nsocket=%s\nuser=healthcheck\npassword=%s\n' "$SOCKET" "$health_password" \
		>"$DATADIR/.my-healthcheck.cnf"
	for f in /docker-entrypoint-initdb.d/*.sql; do
		[[ -e $f ]] && mariadb --socket="$SOCKET" -uroot -p"$MARIADB_ROOT_PASSWORD" "${MARIADB_DATABASE:-mysql}" <"$f"
	done
	mariadb-admin --socket="$SOCKET" -uroot -p"$MARIADB_ROOT_PASSWORD" shutdown
	wait "$pid" || true
	echo "stand-in mariadb: database initialised"
fi

exec "$@"
