# shellcheck shell=bash
# Rotating a secret (scripts/rotate-secret.sh, scripts/swarm/rotate-secret.sh): what each secret
# needs when it changes, as data (the template's extensions/rotation.py), and the steps both
# targets share. Sourced after lib/common.sh, never run.

# How the side that checks a secret learns a new value first: db-roles (a database role's
# password), cache (the cache accepts the old and the new password until the end).
# shellcheck disable=SC2034  # read by the rotate-secret scripts
declare -gA ROTATE_SERVER=([db_owner_password]=db-roles [db_app_password]=db-roles [db_exporter_password]=db-roles [redis_password]=cache)
# Secrets the app reads: it starts again in the other colour with the new value.
# shellcheck disable=SC2034  # read by the rotate-secret scripts
ROTATE_APP=(db_app_password redis_password)
# Services that read a secret when they start: recreated afterwards.
# shellcheck disable=SC2034  # read by the rotate-secret scripts
declare -gA ROTATE_RESTART=([db_exporter_password]="db-exporter" [redis_password]="cache-exporter" [prometheus_password]="prometheus grafana" [alertmanager_password]="alertmanager prometheus")
# A file made from the secret (a web.config.file with its bcrypt hash), made again.
# shellcheck disable=SC2034  # read by the rotate-secret scripts
declare -gA ROTATE_REMAKE=([prometheus_password]=prometheus_web_config [alertmanager_password]=alertmanager_web_config)
# Values only the operator has (--from FILE is needed).
# shellcheck disable=SC2034  # read by the rotate-secret scripts
ROTATE_FROM_OPERATOR=(tls_cert tls_key)
# Secrets the database service reads: on a Swarm its task restarts when they change.
# shellcheck disable=SC2034  # read by the rotate-secret scripts
ROTATE_SWARM_DB=()
# Secrets the script does not rotate, and what to do instead.
declare -gA ROTATE_REFUSED=(
	[db_password]="db-roles and the scripts log in with it, and the database keeps the one it was created with: set the new password in the database yourself (ALTER ROLE or ALTER USER), then write it to the file"
	[grafana_admin_password]="Grafana keeps its admin password in its own database after the first start: grafana cli admin reset-admin-password in the grafana container, then write the file"
	[prometheus_web_config]="it is made from prometheus_password: rotate that one"
	[alertmanager_web_config]="it is made from alertmanager_password: rotate that one"
	[tls_cert]="a certificate and its key change together: replace tls_cert and tls_key, then scripts/compose.sh ENV up --detach --force-recreate proxy"
	[tls_key]="a certificate and its key change together: replace tls_cert and tls_key, then scripts/compose.sh ENV up --detach --force-recreate proxy"
)

# rotation_args ARGS...: ENV NAME [--from FILE] into ROTATE_ENV, ROTATE_NAME, ROTATE_FROM, checked
# before anything changes: ENV is known, NAME is one of its secrets and may be rotated here, a
# value only the operator has comes with --from, and FILE's first line is a usable new value.
rotation_args() {
	local usage="usage: scripts/rotate-secret.sh ENV NAME [--from FILE]"
	[[ $# -ge 2 ]] || die "$usage"
	ROTATE_ENV=$1 ROTATE_NAME=$2 ROTATE_FROM=
	shift 2
	while [[ $# -gt 0 ]]; do
		case $1 in
		--from)
			[[ $# -ge 2 ]] || die "--from needs a file: $usage"
			ROTATE_FROM=$2
			shift 2
			;;
		*) die "unknown argument '$1': $usage" ;;
		esac
	done
	require_env "$ROTATE_ENV"
	# shellcheck disable=SC2046  # a list of names
	is_one_of "$ROTATE_NAME" $(secret_names "$ROTATE_ENV") ||
		die "'$ROTATE_NAME' is not a secret of $ROTATE_ENV: use one of $(secret_names "$ROTATE_ENV")"
	[[ -z ${ROTATE_REFUSED[$ROTATE_NAME]:-} ]] ||
		die "$ROTATE_NAME is not rotated by this script: ${ROTATE_REFUSED[$ROTATE_NAME]//ENV/$ROTATE_ENV}"
	if [[ -z $ROTATE_FROM ]] && is_one_of "$ROTATE_NAME" "${ROTATE_FROM_OPERATOR[@]}"; then
		die "$ROTATE_NAME is a value only you have: put the new one in a file and pass --from FILE"
	fi
	[[ -z $ROTATE_FROM ]] || rotation_value_from "$ROTATE_FROM"
}

# rotation_value_from FILE: FILE's first line into ROTATE_NEW, refused when empty or the placeholder.
rotation_value_from() {
	[[ -f $1 && -r $1 ]] || die "--from $1: no such readable file"
	ROTATE_NEW=
	IFS= read -r ROTATE_NEW <"$1" || [[ -n $ROTATE_NEW ]] || die "--from $1: the file is empty"
	[[ -n $ROTATE_NEW ]] || die "--from $1: its first line is empty"
	[[ $ROTATE_NEW != REPLACE-ME ]] || die "--from $1: that is the placeholder, not a value"
}

# rotation_new_value: ROTATE_NEW, the new value (FILE's first line, or random), different from the
# current one; refused where the secret does not exist yet.
rotation_new_value() {
	local current="$PROJECT_ROOT/secrets/$ROTATE_ENV/$ROTATE_NAME"
	[[ -s $current ]] ||
		die "secrets/$ROTATE_ENV/$ROTATE_NAME does not exist yet: the first use of $ROTATE_ENV makes it (scripts/init-env.sh $ROTATE_ENV)"
	if [[ -n $ROTATE_FROM ]]; then rotation_value_from "$ROTATE_FROM"; else ROTATE_NEW=$(random_secret); fi
	[[ $ROTATE_NEW != "$(head -n 1 "$current")" ]] ||
		die "the new value of $ROTATE_NAME is the one $ROTATE_ENV has now: nothing to rotate"
}

# rotation_stash: the current value kept as secrets/ENV/.rotated/NAME.TIME (0600), the way back;
# its path in ROTATE_STASH.
rotation_stash() {
	local dir="$PROJECT_ROOT/secrets/$ROTATE_ENV/.rotated"
	mkdir -p "$dir"
	chmod 0700 "$dir"
	ROTATE_STASH="$dir/$ROTATE_NAME.$(date -u +%Y%m%dT%H%M%S.%NZ)"
	[[ ! -e $ROTATE_STASH ]] || die "$ROTATE_STASH exists already: try again"
	cp "$PROJECT_ROOT/secrets/$ROTATE_ENV/$ROTATE_NAME" "$ROTATE_STASH.tmp"
	chmod 0600 "$ROTATE_STASH.tmp"
	mv -f "$ROTATE_STASH.tmp" "$ROTATE_STASH"
}
