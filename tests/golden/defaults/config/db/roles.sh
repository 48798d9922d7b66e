#!/bin/sh
# My Service: PostgreSQL's roles, each with what it needs and no more. The db-roles one-off
# service runs this at every `up` and every deploy (scripts/deploy.sh, scripts/db-roles.sh): it
# is idempotent, and an existing database gets the roles the first time.
#   app     the superuser the image created: scripts only (restore, this file)
#   app_owner  owns the schema and everything in it: migrations
#   app_user   the app: reads and writes rows; no DDL, no roles, no files or programs
#   app_exporter  postgres-exporter: pg_monitor
#   app_backup  scripts/backup.sh and base-backup.sh: pg_read_all_data and replication (base
#               backups), over the container's socket only
# Passwords are read from the secret files by psql itself (never on a command line).
set -eu
PGPASSWORD=$(cat /run/secrets/db_password)
export PGPASSWORD PGHOST=db PGPORT=5432 PGUSER=app PGDATABASE=app
# On a cluster nothing orders the start (Compose waits for the db's health check): up to 2 minutes.
tries=0
until pg_isready -q; do
	tries=$((tries + 1))
	[ "$tries" -lt 120 ] || { echo "db-roles: the database did not answer within 120 s" >&2; exit 1; }
	sleep 1
done
# The administrator's password is the one the data volume was created with: another file (one
# made again after it was lost, another environment's) is named here, not left to psql's words.
if ! refused=$(psql -X -q -c 'SELECT 1' 2>&1 >/dev/null); then
	case $refused in
	*"password authentication failed"*)
		echo "db-roles: the database refuses the password in secrets/<env>/db_password: its data volume was created with another one; put back the file it was created with, or set this one in the database (ALTER ROLE app PASSWORD ...), then run scripts/db-roles.sh again" >&2 ;;
	*) echo "$refused" >&2 ;;
	esac
	exit 1
fi
psql -X -q -v ON_ERROR_STOP=1 <<'SQL'
\set owner_password `cat /run/secrets/db_owner_password`
\set app_password `cat /run/secrets/db_app_password`
\set exporter_password `cat /run/secrets/db_exporter_password`
SELECT format('CREATE ROLE %I', name) FROM unnest(ARRAY['app_owner', 'app_user', 'app_exporter', 'app_backup']) AS name
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = name) \gexec
ALTER ROLE app_owner WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD :'owner_password';
ALTER ROLE app_user WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD :'app_password';
ALTER ROLE app_exporter WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD :'exporter_password';
-- No password: TCP connections need one (scram-sha-256), so it can log in over the socket only.
ALTER ROLE app_backup WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE REPLICATION NOBYPASSRLS PASSWORD NULL;
GRANT pg_monitor TO app_exporter;
GRANT pg_read_all_data TO app_backup;
\i /etc/db-roles/grants.sql
SQL
echo "db-roles: app_owner, app_user, app_exporter and app_backup are in place"
