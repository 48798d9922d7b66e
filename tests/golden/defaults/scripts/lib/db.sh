# shellcheck shell=bash
# Database operations for postgres, shared by backup.sh, restore.sh, verify-backup.sh and
# migrate.sh. Every function runs the database's own client inside a container: DB_EXEC is the
# command prefix, set by db_use_service (the environment's db) or db_use_container (a throwaway).
# Sourced after lib/common.sh, never run.

# shellcheck disable=SC2034  # DB_ENGINE and DB_DUMP_TRAILER are read by the scripts that source this
DB_ENGINE=postgres
DB_NAME=app
# The administrator (restore, role setup) and the read-only backup role (config/db/roles.sh).
DB_USER=app
DB_BACKUP_USER=app_backup
# A throwaway copy of the db service (verify-backup.sh): its user, hardening, limits and settings,
# an anonymous volume, no network; DB_SECRETS are the secret files it reads (mounted per environment).
DB_THROWAWAY_ARGS=(--user=999:999 --group-add=10001 --read-only --cap-drop=ALL --security-opt=no-new-privileges:true --network=none --pids-limit=512 --cpus=1 --memory=1024m --tmpfs=/tmp --tmpfs=/var/run/postgresql --shm-size=256m --volume=/var/lib/postgresql/data --env=POSTGRES_USER=app --env=POSTGRES_DB=app --env=POSTGRES_PASSWORD_FILE=/run/secrets/db_password --env=PGDATA=/var/lib/postgresql/data)
DB_SECRETS=(db_password)
# The dump trailer the database's own tool writes last: a dump without it is incomplete.
DB_DUMP_TRAILER='-- PostgreSQL database dump complete'

db_use_service() { # ENV
	compose_cmd "$1"
	DB_EXEC=("${COMPOSE[@]}" exec -T db)
}

# db_app_stop ENV, db_app_start ENV: the app's replicas stop while its database is swapped
# (scripts/restore.sh), then start again and are healthy; db_app_start fails otherwise.
db_app_stop() {
	compose_cmd "$1"
	"${COMPOSE[@]}" stop "${APP_SERVICES[@]}" >/dev/null 2>&1 || true
}

db_app_start() {
	compose_cmd "$1"
	"${COMPOSE[@]}" up --detach --no-deps --wait "${APP_SERVICES[@]}" >/dev/null 2>&1
}

# db_image ENV: DB_IMAGE, the database image ENV's compose files run (for its throwaway copies).
db_image() {
	compose_cmd "$1"
	DB_IMAGE=$("${COMPOSE[@]}" config --images db 2>/dev/null) && [[ -n $DB_IMAGE ]] ||
		die "cannot read the database image of $1 from its compose files"
}

db_use_container() { # NAME
	DB_EXEC=(docker exec -i "$1")
}

# db_secret_mounts ENV: DB_SECRET_MOUNTS, the `docker run` options that mount ENV's secret files
# where the db service reads them (for its throwaway copies); dies if one is missing.
db_secret_mounts() {
	local name
	DB_SECRET_MOUNTS=()
	for name in "${DB_SECRETS[@]}"; do
		[[ -r $PROJECT_ROOT/secrets/$1/$name ]] || die "secrets/$1/$name is missing: run scripts/init-env.sh $1"
		DB_SECRET_MOUNTS+=("--volume=$PROJECT_ROOT/secrets/$1/$name:/run/secrets/$name:ro")
	done
}

# psql DB ARGS...: runs psql on the socket as the superuser the image created.
db_psql() {
	local db=$1
	shift
	"${DB_EXEC[@]}" psql -X -q -v ON_ERROR_STOP=1 -U "$DB_USER" -d "$db" "$@"
}

# db_dump: a consistent plain-SQL dump of the app's database on stdout (pg_dump's snapshot), as
# the backup role (reads everything, changes nothing). Without owners or privileges: it loads
# anywhere, and db_grant gives a restored database its owner and privileges.
db_dump() { "${DB_EXEC[@]}" pg_dump -U "$DB_BACKUP_USER" -d "$DB_NAME" --no-password --no-owner --no-privileges; }

# db_load DB: plain SQL from stdin into DB, stopping at the first error.
db_load() { "${DB_EXEC[@]}" psql -X -q -v ON_ERROR_STOP=1 --single-transaction -U "$DB_USER" -d "$1" >/dev/null; }

db_create() { db_psql postgres -c "CREATE DATABASE \"$1\""; }

# db_grant DB: DB's objects to the owner role, the app's privileges on them (config/db/grants.sql).
db_grant() { db_psql "$1" <"$PROJECT_ROOT/config/db/grants.sql" >/dev/null; }
db_drop() { db_psql postgres -c "DROP DATABASE IF EXISTS \"$1\" WITH (FORCE)"; }
db_exists() { [[ $(db_psql postgres -At -c "SELECT 1 FROM pg_database WHERE datname = '$1'") == 1 ]]; }

# db_counts DB: "table<TAB>rows" for every table, sorted.
db_counts() {
	db_psql "$1" -At -F $'\t' -c "SELECT table_name, (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', table_schema, table_name), false, true, '')))[1]::text
		FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1"
}

# db_schema_version DB: the newest applied migration, or "none".
db_schema_version() {
	local version
	version=$(db_psql "$1" -At -c "SELECT CASE WHEN to_regclass('public.schema_migrations') IS NULL THEN NULL ELSE 1 END" )
	if [[ $version == 1 ]]; then
		version=$(db_psql "$1" -At -c "SELECT coalesce(max(version), 'none') FROM schema_migrations")
	fi
	echo "${version:-none}"
}

# db_swap NEW OLD: NEW becomes the app's database; the current one is kept under the name OLD.
# No session may hold either database while they are renamed: the callers stop the app first.
db_swap() {
	db_psql postgres -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname IN ('$DB_NAME', '$1') AND pid <> pg_backend_pid()" >/dev/null
	db_psql postgres -c "ALTER DATABASE \"$DB_NAME\" RENAME TO \"$2\"" -c "ALTER DATABASE \"$1\" RENAME TO \"$DB_NAME\""
}

# db_wait_ready: the final server accepts connections. Over TCP on loopback: the image's
# temporary server, which runs while it initialises, listens on the socket only.
db_wait_ready() {
	local _
	for _ in $(seq 90); do
		"${DB_EXEC[@]}" pg_isready -q -h 127.0.0.1 -U "$DB_USER" 2>/dev/null && return 0
		sleep 1
	done
	return 1
}

# count_dump_rows: reads a plain dump on stdin, writes "table<TAB>rows" for every table it creates
# and exits 3 unless the dump ends with the tool's completion trailer.
count_dump_rows() {
	awk -v trailer="$DB_DUMP_TRAILER" '
		/^CREATE TABLE / { t = $3; sub(/^public\./, "", t); gsub(/"/, "", t); rows[t] += 0; next }
		/^COPY / { t = $2; sub(/^public\./, "", t); gsub(/"/, "", t); rows[t] += 0; copying = 1; next }
		copying && $0 == "\\." { copying = 0; next }
		copying { rows[t]++; next }
		index($0, trailer) == 1 { complete = 1 }
		END {
			for (t in rows) printf "%s\t%d\n", t, rows[t]
			if (!complete) exit 3
		}' | LC_ALL=C sort
}
