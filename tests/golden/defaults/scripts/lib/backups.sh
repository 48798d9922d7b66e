# shellcheck shell=bash
# Backup bookkeeping shared by backup.sh, restore.sh and verify-backup.sh: where backups live,
# how one is checked and opened, retention, metrics for monitoring, the off-host copy.
# Sourced after lib/common.sh, never run.

# backups_init ENV: sets BACKUP_DIR (created 0700) and the retention policy.
backups_init() {
	BACKUP_DIR=${BACKUP_DIR:-$PROJECT_ROOT/backups/$1}
	BACKUP_KEEP_LAST=${BACKUP_KEEP_LAST:-7}
	BACKUP_KEEP_DAYS=${BACKUP_KEEP_DAYS:-14}
	[[ $BACKUP_KEEP_LAST =~ ^[1-9][0-9]*$ ]] || die "BACKUP_KEEP_LAST '$BACKUP_KEEP_LAST' must be a whole number of at least 1"
	[[ $BACKUP_KEEP_DAYS =~ ^[0-9]+$ ]] || die "BACKUP_KEEP_DAYS '$BACKUP_KEEP_DAYS' must be a whole number of days"
	mkdir -p "$BACKUP_DIR"
	chmod 0700 "$BACKUP_DIR"
}

# backup_key_file ENV: the passphrase file for encryption, or nothing.
backup_key_file() {
	local file=${BACKUP_KEY_FILE:-$PROJECT_ROOT/secrets/$1/backup_key}
	if [[ -n ${BACKUP_KEY_FILE:-} && ! -s $file ]]; then die "BACKUP_KEY_FILE $file is missing or empty"; fi
	[[ -s $file ]] && echo "$file"
	return 0
}

# signing_key ENV: the Ed25519 key that signs each backup's SHA256SUMS (secrets/ENV/, made by
# scripts/init-env.sh; BACKUP_SIGNING_KEY_FILE overrides). A restore on another host needs it:
# keep a copy with your other secrets.
signing_key() {
	local file=${BACKUP_SIGNING_KEY_FILE:-$PROJECT_ROOT/secrets/$1/backup_signing_key}
	[[ -s $file ]] || die "the backup signing key $file is missing: run scripts/init-env.sh $1, or put back your copy"
	require_cmd openssl "needed to sign and check backups"
	echo "$file"
}

# sign_manifest DIR ENV: DIR/SHA256SUMS.sig, so that a manifest rewritten to match altered files
# is refused (a checksum list alone only catches accidents).
sign_manifest() {
	openssl pkeyutl -sign -rawin -inkey "$(signing_key "$2")" -in "$1/SHA256SUMS" -out "$1/SHA256SUMS.sig" 2>/dev/null ||
		die "openssl could not sign the manifest: no backup was made"
}

# check_signature DIR ENV: the manifest is the one this environment's key signed. Backups made
# before backups were signed have no signature: BACKUP_ALLOW_UNSIGNED=yes accepts them.
check_signature() {
	local name key
	name=$(basename "$1")
	if [[ ! -f "$1/SHA256SUMS.sig" ]]; then
		[[ ${BACKUP_ALLOW_UNSIGNED:-no} == yes ]] ||
			die "$name has no signature (SHA256SUMS.sig): it predates signed backups or was altered; if you know where it comes from, run again with BACKUP_ALLOW_UNSIGNED=yes"
		log "warning: $name is unsigned, accepted because BACKUP_ALLOW_UNSIGNED=yes"
		return 0
	fi
	key=$(signing_key "$2")
	openssl pkeyutl -verify -rawin -inkey "$key" -in "$1/SHA256SUMS" -sigfile "$1/SHA256SUMS.sig" >/dev/null 2>&1 ||
		die "$name fails its signature check: its manifest was altered or signed with another key, use another backup"
}

# resolve_backup ID: the backup's directory (ID may be "latest"); dies if there is none.
# require_backup_id ID: dies unless ID is "latest" or a backup's id (before anything is touched).
require_backup_id() {
	[[ $1 == latest || $1 =~ ^[0-9]{8}T[0-9]{6}Z$ ]] ||
		die "'$1' is not a backup id: use latest or an id like 20261126T030000Z (the directories in backups/ENV/)"
}

resolve_backup() {
	local id=${1:-latest}
	if [[ $id == latest ]]; then
		[[ -L "$BACKUP_DIR/latest" ]] || die "no backup in ${BACKUP_DIR#"$PROJECT_ROOT"/} yet"
		id=$(readlink "$BACKUP_DIR/latest")
	fi
	[[ $id =~ ^[0-9]{8}T[0-9]{6}Z$ && -d "$BACKUP_DIR/$id" ]] || die "no backup $id in ${BACKUP_DIR#"$PROJECT_ROOT"/}"
	echo "$BACKUP_DIR/$id"
}

# check_backup DIR ENV: the manifest is signed by ENV's key, the checksums match (a truncated or
# altered file fails here), and the key is there if the backup is encrypted.
check_backup() {
	[[ -f "$1/SHA256SUMS" ]] || die "$(basename "$1") has no SHA256SUMS: it is not a complete backup"
	check_signature "$1" "$2"
	(cd "$1" && sha256sum --quiet --strict -c SHA256SUMS >/dev/null 2>&1) ||
		die "$(basename "$1") fails its checksum: the backup is damaged, use another one"
	if [[ $(meta "$1" DUMP) == *.gpg && -z $(backup_key_file "$2") ]]; then
		die "$(basename "$1") is encrypted and no key is set (secrets/$2/backup_key or BACKUP_KEY_FILE)"
	fi
}

# open_backup DIR ENV: the plain SQL of a checked backup on stdout (decrypted, decompressed).
open_backup() {
	local dir=$1 dump key_file
	dump=$(meta "$dir" DUMP)
	if [[ $dump == *.gpg ]]; then
		key_file=$(backup_key_file "$2")
		[[ -n $key_file ]] || die "$(basename "$dir") is encrypted and no key is set (secrets/$2/backup_key or BACKUP_KEY_FILE)"
		gpg --batch --quiet --decrypt --passphrase-file "$key_file" "$dir/$dump" | gzip -dc
	else
		gzip -dc "$dir/$dump"
	fi
}

# store_to FILE KEY_FILE: stdin (compressed already) into FILE, encrypted with gpg when KEY_FILE is
# set (without gpg's own compression, which would only spend time on it).
store_to() {
	if [[ -n $2 ]]; then
		gpg --batch --quiet --yes --symmetric --cipher-algo AES256 --compress-algo none --passphrase-file "$2" -o "$1"
	else
		cat >"$1"
	fi
}

# compress_to FILE KEY_FILE: stdin gzipped, then store_to FILE KEY_FILE.
compress_to() { gzip -6 | store_to "$@"; }

# begin_backup DIR ID: WORK, the directory DIR/.incomplete-ID that a backup is written into; on
# exit anything but a published backup is removed, so a half-written backup never becomes "latest".
begin_backup() {
	[[ ! -e "$1/$2" ]] || die "backup $2 exists already: wait a second and retry"
	WORK="$1/.incomplete-$2"
	trap '[[ -d $WORK ]] && rm -rf "$WORK"; true' EXIT
	trap 'die "interrupted"' INT TERM
	BACKUP_DIR=$1 remove_stale_incomplete
	mkdir -p "$WORK"
}

# publish_backup DIR ID ENV FILE...: WORK's FILEs checksummed (SHA256SUMS) and signed, WORK durably
# renamed to DIR/ID, then DIR/latest switched to it atomically.
publish_backup() {
	local dir=$1 id=$2 env=$3
	shift 3
	(cd "$WORK" && sha256sum "$@" >SHA256SUMS)
	sign_manifest "$WORK" "$env"
	sync_dir "$WORK"
	mv "$WORK" "$dir/$id"
	ln -sfn "$id" "$dir/.latest.tmp" && mv -Tf "$dir/.latest.tmp" "$dir/latest"
}

# make_backup ENV ID NOW KEY_FILE: a backup of ENV's database (where DB_EXEC and DB_DUMP_EXEC reach
# it) as BACKUP_DIR/ID: the dump (gzip; gpg when KEY_FILE is set), the row counts and schema version
# in its snapshot, meta.env, SHA256SUMS and its signature; BACKUP_DIR/latest points to it once it
# is complete. Dies, leaving no backup, if the dump fails.
make_backup() {
	local env=$1 id=$2 now=$3 key_file=$4 work dump=dump.sql.gz
	begin_backup "$BACKUP_DIR" "$id"
	work=$WORK
	[[ -z $key_file ]] || dump=$dump.gpg
	log "backup $id of $env: dumping $DB_ENGINE"
	db_dump_counted "$work" | store_to "$work/$dump" "$key_file" ||
		die "$(cat "$work/.dump-error" 2>/dev/null || echo "the dump failed"): no backup was made"
	cat >"$work/meta.env" <<META
ID=$id
ENVIRONMENT=$env
DATABASE=$DB_ENGINE
CREATED=$(date -u -d "@$now" +%Y-%m-%dT%H:%M:%SZ)
ENCRYPTED=$([[ -n $key_file ]] && echo yes || echo no)
DUMP=$dump
SCHEMA_VERSION=$(cat "$work/schema_version")
META
	rm -f "$work/schema_version"
	publish_backup "$BACKUP_DIR" "$id" "$env" "$dump" counts.tsv meta.env
	log "backup $id of $env complete: $(du -sh "$BACKUP_DIR/$id/$dump" | cut -f1), $(wc -l <"$BACKUP_DIR/$id/counts.tsv") tables"
}

# restore_differs DIR ENV: DIR's dump loaded into the database DB_NAME (made if missing) of the
# server DB_EXEC reaches, then its row counts and schema version compared with the backup's. Prints
# what differs and returns 1; prints nothing if the restore matches.
restore_differs() {
	local dir=$1 env=$2 restored version
	db_exists "$DB_NAME" || db_create "$DB_NAME" >/dev/null
	if ! (open_backup "$dir" "$env" | db_load "$DB_NAME") 2>"$BACKUP_DIR/.verify-error"; then
		echo "the dump does not load: $(tail -n 1 "$BACKUP_DIR/.verify-error")"
		return 1
	fi
	rm -f "$BACKUP_DIR/.verify-error"
	restored=$(db_counts "$DB_NAME")
	if [[ -z $restored ]]; then
		echo "no tables after the restore"
		return 1
	fi
	if [[ $restored != "$(cat "$dir/counts.tsv")" ]]; then
		echo "row counts differ from the backup's: $(diff <(cat "$dir/counts.tsv") <(echo "$restored") | grep '^[<>]' | head -n 3 | tr '\n' ' ')"
		return 1
	fi
	version=$(db_schema_version "$DB_NAME")
	if [[ $version != "$(meta "$dir" SCHEMA_VERSION)" ]]; then
		echo "schema version $version, expected $(meta "$dir" SCHEMA_VERSION)"
		return 1
	fi
}

meta() { sed -n "s/^$2=//p" "$1/meta.env"; }

sync_dir() { sync -f "$1" 2>/dev/null || sync; }

# Incomplete directories older than a day are the remains of a crashed backup.
remove_stale_incomplete() {
	find "$BACKUP_DIR" -maxdepth 1 -name '.incomplete-*' -mmin +1440 -exec rm -rf {} + 2>/dev/null || true
}

# list_backups: the ids of complete backups, newest first.
list_backups() {
	local dir ids=()
	for dir in "$BACKUP_DIR"/*/; do
		dir=${dir%/}
		dir=${dir##*/}
		[[ $dir =~ ^[0-9]{8}T[0-9]{6}Z$ ]] && ids+=("$dir")
	done
	[[ -z ${ids[*]:-} ]] || printf '%s\n' "${ids[@]}" | sort -r
}

epoch_of() { date -u -d "$(sed -E 's/^(....)(..)(..)T(..)(..)(..)Z$/\1-\2-\3 \4:\5:\6/' <<<"$1")" +%s; }

# apply_retention NOW: keeps the newest BACKUP_KEEP_LAST, every backup younger than
# BACKUP_KEEP_DAYS, and the newest verified backup; deletes the rest.
apply_retention() {
	local now=$1 index=0 id newest_verified="" keep
	for id in $(list_backups); do
		[[ -z $newest_verified && -f "$BACKUP_DIR/$id/verified" ]] && newest_verified=$id
	done
	for id in $(list_backups); do
		keep=no
		((index < BACKUP_KEEP_LAST)) && keep=yes
		(((now - $(epoch_of "$id")) < BACKUP_KEEP_DAYS * 86400)) && keep=yes
		[[ $id == "$newest_verified" ]] && keep=yes
		if [[ $keep == no ]]; then
			rm -rf "${BACKUP_DIR:?}/$id"
			log "retention: deleted $id"
		fi
		index=$((index + 1))
	done
}

# record_metric ENV NAME VALUE: one gauge in metrics/ENV/backup.prom (node exporter's textfile
# format; BACKUP_METRICS_DIR overrides the directory).
record_metric() {
	local dir=${BACKUP_METRICS_DIR:-$PROJECT_ROOT/metrics/$1}
	local file="$dir/backup.prom"
	shared_dir "$dir"
	{ grep -v "^$2{" "$file" 2>/dev/null || true; printf '%s{environment="%s"} %s\n' "$2" "$1" "$3"; } | sort |
		write_atomically "$file"
}

# push_off_host ENV ID: a copy in the restic repository, when one is configured.
push_off_host() {
	[[ -n ${BACKUP_RESTIC_REPOSITORY:-} ]] || return 0
	require_cmd restic "needed for BACKUP_RESTIC_REPOSITORY"
	export RESTIC_REPOSITORY=$BACKUP_RESTIC_REPOSITORY
	export RESTIC_PASSWORD_FILE=${RESTIC_PASSWORD_FILE:-$PROJECT_ROOT/secrets/$1/restic_password}
	[[ -s $RESTIC_PASSWORD_FILE ]] || die "restic password file $RESTIC_PASSWORD_FILE is missing"
	restic snapshots --quiet >/dev/null 2>&1 || restic init --quiet >/dev/null || die "cannot open or create the restic repository"
	(cd "$BACKUP_DIR" && restic backup --quiet --tag "$1" --tag "$2" "$2") || die "the off-host copy of $2 failed (the local backup is complete)"
	log "off-host copy of $2 in the restic repository"
}
