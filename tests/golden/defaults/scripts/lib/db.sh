# shellcheck shell=bash
# Database operations for postgres, shared by backup.sh, restore.sh, verify-backup.sh and
# migrate.sh. Every function runs the database's own client inside a container: DB_EXEC is the
# command prefix, set by db_use_service (the environment's db) or db_use_container (a throwaway).
# Sourced after lib/common.sh, never run.

# shellcheck disable=SC2034  # DB_ENGINE is read by the scripts that source this
DB_ENGINE=postgres
DB_NAME=app
# The administrator (restore, role setup) and the read-only backup role (config/db/roles.sh).
DB_USER=app
DB_BACKUP_USER=app_backup
# A throwaway copy of the db service (verify-backup.sh): its user, hardening, limits and settings,
# an anonymous volume, no network; DB_SECRETS are the secret files it reads (mounted per environment).
DB_THROWAWAY_ARGS=(--user=999:999 --group-add=10001 --read-only --cap-drop=ALL --security-opt=no-new-privileges:true --network=none --pids-limit=512 --cpus=1 --memory=1024m --tmpfs=/tmp --tmpfs=/var/run/postgresql --shm-size=256m --volume=/var/lib/postgresql/data --env=POSTGRES_USER=app --env=POSTGRES_DB=app --env=POSTGRES_PASSWORD_FILE=/run/secrets/db_password --env=PGDATA=/var/lib/postgresql/data)
DB_SECRETS=(db_password)

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

# db_dump_counted WORK: a consistent dump of the app's database on stdout, plain SQL gzipped by
# pg_dump in the container (the exec stream carries compressed bytes). While it runs, in the
# snapshot the dump reads (pg_export_snapshot), WORK/counts.tsv gets every table's row count and
# WORK/schema_version the schema version. As the backup role (reads everything, changes nothing).
# Without owners or privileges: it loads anywhere, and db_grant gives a restored database its owner
# and privileges. On failure, returns 1 with the reason in WORK/.dump-error.
db_dump_counted() {
	local work=$1 snapshot dumper
	coproc DB_SNAPSHOT { "${DB_EXEC[@]}" psql -X -q -At -F $'\t' -v ON_ERROR_STOP=1 -U "$DB_BACKUP_USER" -d "$DB_NAME" --no-password 2>&1; }
	# The session's transaction holds the snapshot until it ends.
	snapshot=$(db_snapshot_query 'BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SELECT pg_export_snapshot();') || true
	if [[ ! $snapshot =~ ^[0-9A-Fa-f-]+$ ]]; then
		echo "no snapshot to dump: ${snapshot:-the database did not answer}" >"$work/.dump-error"
		return 1
	fi
	"${DB_EXEC[@]}" pg_dump -U "$DB_BACKUP_USER" -d "$DB_NAME" --no-password --no-owner --no-privileges \
		--snapshot="$snapshot" --compress=6 &
	dumper=$!
	if ! db_snapshot_query "$DB_COUNTS_SQL;" >"$work/counts.tsv" ||
		! db_snapshot_query "$DB_SCHEMA_VERSION_SQL" >"$work/schema_version"; then
		kill "$dumper" 2>/dev/null || true
		echo "counting rows in the dump's snapshot failed: $(tail -q -n 1 "$work/counts.tsv" "$work/schema_version" 2>/dev/null | tr '\n' ' ')" >"$work/.dump-error"
		return 1
	fi
	# Open until pg_dump is done: it imports the snapshot when it starts, which may be later.
	if ! wait "$dumper"; then
		echo "pg_dump failed" >"$work/.dump-error"
		return 1
	fi
	printf '%s\n' 'COMMIT;' '\q' 1>&"${DB_SNAPSHOT[1]}" 2>/dev/null || true
}

# db_snapshot_query SQL: SQL's output in db_dump_counted's session; fails if the session ends first.
db_snapshot_query() {
	local line
	printf '%s\n' "$1" '\echo dp-query-end' 1>&"${DB_SNAPSHOT[1]}" 2>/dev/null || return 1
	while IFS= read -r line <&"${DB_SNAPSHOT[0]}"; do
		[[ $line == dp-query-end ]] && return 0
		printf '%s\n' "$line"
	done
	return 1
}

# db_load DB: plain SQL from stdin into DB, stopping at the first error.
db_load() { "${DB_EXEC[@]}" psql -X -q -v ON_ERROR_STOP=1 --single-transaction -U "$DB_USER" -d "$1" >/dev/null; }

db_create() { db_psql postgres -c "CREATE DATABASE \"$1\""; }

# db_grant DB: DB's objects to the owner role, the app's privileges on them (config/db/grants.sql).
db_grant() { db_psql "$1" <"$PROJECT_ROOT/config/db/grants.sql" >/dev/null; }
db_drop() { db_psql postgres -c "DROP DATABASE IF EXISTS \"$1\" WITH (FORCE)"; }
db_exists() { [[ $(db_psql postgres -At -c "SELECT 1 FROM pg_database WHERE datname = '$1'") == 1 ]]; }

# db_counts DB: "table<TAB>rows" for every table, sorted (DB_COUNTS_SQL: the query, also run in the
# dump's snapshot).
DB_COUNTS_SQL="SELECT table_name, (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', table_schema, table_name), false, true, '')))[1]::text
	FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY table_name::text COLLATE \"C\""
db_counts() { db_psql "$1" -At -F $'\t' -c "$DB_COUNTS_SQL"; }

# db_schema_version DB: the newest applied migration, or "none".
# (DB_SCHEMA_VERSION_SQL: a psql script, also run in the dump's snapshot.)
DB_SCHEMA_VERSION_SQL="SELECT to_regclass('public.schema_migrations') IS NOT NULL AS has_migrations \\gset
\\if :has_migrations
SELECT coalesce(max(version)::text, 'none') FROM public.schema_migrations;
\\else
\\echo none
\\endif"
db_schema_version() { db_psql "$1" -At <<<"$DB_SCHEMA_VERSION_SQL"; }

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
