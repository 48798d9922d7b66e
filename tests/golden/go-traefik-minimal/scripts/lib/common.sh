# shellcheck shell=bash
# Shared helpers for scripts/*.sh: logging, environment checks, the compose command line and
# first-use setup of an environment (env file and secret files). Sourced, never run.

PROJECT_ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd)
PROJECT_SLUG=golden-go
ENVIRONMENTS=(dev production)
# Group that may read secret files; every container that reads a secret runs with it.
SECRETS_GID=${SECRETS_GID:-10001}
# Keys of env/ENV.env that the scripts read (scripts/deploy.sh), not Compose.
SCRIPT_SETTINGS=(SIGNING_IDENTITY SIGNING_ISSUER DEPLOY_TARGET SWARM_HOST SWARM_NODE_HOST KUBERNETES_CONTEXT KUBERNETES_DEPLOY_TIMEOUT)
# Per-environment policy (the template's extensions/environments.py): where a data change
# (restore, a rollback that restores) needs --confirm-ENV, and where a secret file that cannot get
# the secrets group may fall back to 0644 (a developer's machine).
CONFIRMED_ENVIRONMENTS=(production)
WORLD_READABLE_SECRETS_ENVIRONMENTS=(dev)
# The app runs as two Compose services, its colours; the proxy routes to the active one. Each
# colour's service, and the env-file keys holding its version and replica count:
# shellcheck disable=SC2034  # read by lib/release.sh and lib/proxy.sh
COLOURS=(blue green)
# shellcheck disable=SC2034
APP_SERVICES=(app-blue app-green)
# shellcheck disable=SC2034
declare -A APP_SERVICE=([blue]=app-blue [green]=app-green)
# shellcheck disable=SC2034
declare -A VERSION_VAR=([blue]=APP_BLUE_VERSION [green]=APP_GREEN_VERSION)
# shellcheck disable=SC2034
declare -A REPLICAS_VAR=([blue]=APP_BLUE_REPLICAS [green]=APP_GREEN_REPLICAS)
# shellcheck disable=SC2034
APP_PORT=8080

# shellcheck source=core.sh
source "$PROJECT_ROOT/scripts/lib/core.sh"

# is_one_of WORD LIST...: WORD is one of LIST.
is_one_of() {
	local word=$1 item
	shift
	for item in "$@"; do [[ $item == "$word" ]] && return 0; done
	return 1
}

# confirmation_flag ENV: the option that confirms a data change in ENV (--confirm-ENV), or nothing.
confirmation_flag() {
	if is_one_of "$1" "${CONFIRMED_ENVIRONMENTS[@]}"; then echo "--confirm-$1"; fi
}

# require_version VERSION: dies unless VERSION can be an image tag.
require_version() {
	[[ $1 =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] ||
		die "version '$1' is not a valid image tag: use letters, digits, '_', '.' and '-', e.g. 1.4.2"
}

# env_value ENV KEY: KEY's value in env/ENV.env (its last line; empty if unset or no file yet).
env_value() {
	[[ -f "$PROJECT_ROOT/env/$1.env" ]] || return 0
	sed -n "s/^$2=//p" "$PROJECT_ROOT/env/$1.env" | tail -n 1
}

# check_build_env [ENV]: BUILD_ENV_FILE (from the environment, else env/ENV.env), if set, is a
# readable file of NAME=VALUE lines (docker/build-env.sh's rules, which the image's build applies),
# exported with its absolute path for the build's secret. Dies naming the fix before a build.
check_build_env() {
	local file=${BUILD_ENV_FILE:-$(env_value "${1:-}" BUILD_ENV_FILE)} reason
	[[ -n $file ]] || return 0
	[[ $file == /* ]] || file=$PROJECT_ROOT/$file
	[[ -f $file && -r $file ]] || die "BUILD_ENV_FILE is not a readable file: $file"
	reason=$(BUILD_ENV_SECRET=$file sh "$PROJECT_ROOT/docker/build-env.sh" 2>&1 >/dev/null) ||
		die "BUILD_ENV_FILE $file: ${reason#error: }"
	if [[ $(stat -c %A "$file") != *--- ]]; then
		log "warning: BUILD_ENV_FILE $file is open to other users: chmod 600 it"
	fi
	export BUILD_ENV_FILE=$file
}

# deploy_target ENV: where ENV runs: DEPLOY_TARGET from the environment or env/ENV.env [compose].
deploy_target() {
	local target=${DEPLOY_TARGET:-$(env_value "$1" DEPLOY_TARGET)}
	echo "${target:-compose}"
}

# on_target ENV ARGS...: when env/ENV.env (or the environment) sets DEPLOY_TARGET=swarm or
# kubernetes, this script's version for it (scripts/swarm/, scripts/kubernetes/) runs in its place
# with ARGS; compose: returns.
on_target() {
	local env=$1 target name place
	shift
	target=$(deploy_target "$env")
	case $target in
	compose) return 0 ;;
	swarm | kubernetes)
		name=${target^} place=$name
		[[ $target != swarm ]] || place="a Swarm"
		[[ -d "$PROJECT_ROOT/scripts/$target" ]] ||
			die "DEPLOY_TARGET=$target for $env, but this project has no $name target: answer orchestrators with $target (copier update --data 'orchestrators=[$target]') or set DEPLOY_TARGET=compose in env/$env.env"
		[[ -x "$PROJECT_ROOT/scripts/$target/$SCRIPT_NAME.sh" ]] ||
			die "scripts/$SCRIPT_NAME.sh has no $name version: $env runs on $place (DEPLOY_TARGET=$target in env/$env.env)"
		exec "$PROJECT_ROOT/scripts/$target/$SCRIPT_NAME.sh" "$@"
		;;
	*) die "DEPLOY_TARGET=$target in env/$env.env: use compose, swarm or kubernetes" ;;
	esac
}

# require_env ENV: dies unless ENV is one of this project's environments.
require_env() {
	local env=${1:-} known
	for known in "${ENVIRONMENTS[@]}"; do
		[[ $env == "$known" ]] && return 0
	done
	die "unknown environment '${env}': use one of ${ENVIRONMENTS[*]}"
}

# secret_names ENV: the secret files ENV needs, in secrets/ENV/.
secret_names() {
	case $1 in
	dev) echo "" ;;
	production) echo "" ;;
	esac
}

# compose_cmd ENV: sets the COMPOSE array to the docker compose command line for ENV.
# shellcheck disable=SC2034  # COMPOSE is read by the scripts that call this function
compose_cmd() {
	COMPOSE=(docker compose
		--project-name "${PROJECT_SLUG}-$1"
		--project-directory "$PROJECT_ROOT"
		--env-file "$PROJECT_ROOT/env/$1.env"
		-f "$PROJECT_ROOT/compose.yaml"
		-f "$PROJECT_ROOT/compose.$1.yaml")
	engine_is_25_or_later && COMPOSE+=(-f "$PROJECT_ROOT/compose.engine-25.yaml")
	return 0
}

# engine_is_25_or_later: whether the Docker engine speaks API 1.44 or later (Engine 25+), which
# compose.engine-25.yaml needs. Asked once per script; no answer (no engine) counts as older.
engine_is_25_or_later() {
	if [[ -z ${ENGINE_API_VERSION+set} ]]; then
		ENGINE_API_VERSION=$(docker version --format '{{.Server.APIVersion}}' 2>/dev/null) || ENGINE_API_VERSION=
	fi
	[[ $ENGINE_API_VERSION =~ ^([0-9]+)\.([0-9]+)$ ]] || return 1
	((BASH_REMATCH[1] > 1 || (BASH_REMATCH[1] == 1 && BASH_REMATCH[2] >= 44)))
}

# ensure_images ENV [SERVICE...]: the images that `up` of these services (and their dependencies;
# all by default) runs are on this host or can be pulled now; otherwise one line names the missing
# ones and the fix. The app's own image is built here or brought by scripts/deploy.sh.
ensure_images() {
	local env=$1 known arg image app missing=() services=()
	shift
	compose_cmd "$env"
	known=" $("${COMPOSE[@]}" config --services | tr '\n' ' ') "
	for arg in "$@"; do [[ $known == *" $arg "* ]] && services+=("$arg"); done
	app=$(env_value "$env" APP_IMAGE)
	app=${app:-golden-go}
	while read -r image; do
		[[ -z $image || $image == "$app:"* ]] && continue
		docker image inspect "$image" >/dev/null 2>&1 && continue
		docker pull --quiet "$image" >/dev/null 2>&1 && continue
		missing+=("$image")
	done < <("${COMPOSE[@]}" config --images "${services[@]}" | sort -u)
	[[ -z ${missing[*]+set} ]] ||
		die "images not on this host and not pullable: ${missing[*]}; set IMAGE_MIRROR in env/$env.env to a registry or mirror that holds them under the same paths, or docker load them"
}

random_secret() { od -An -N24 -tx1 /dev/urandom | tr -d ' \n'; }

# seal_secret ENV FILE: 0640 with group SECRETS_GID, so that the non-root containers can read
# it (Compose bind-mounts secret files with their host permissions).
seal_secret() {
	local env=$1 file=$2
	chmod 0640 "$file"
	if ! chgrp "$SECRETS_GID" "$file" 2>/dev/null; then
		if ! is_one_of "$env" "${WORLD_READABLE_SECRETS_ENVIRONMENTS[@]}"; then
			rm -f "$file"
			die "cannot give $file group $SECRETS_GID: run as root (or a member of group $SECRETS_GID)"
		fi
		# A developer's machine without that group: readable by all local users.
		chmod 0644 "$file"
		log "warning: $file is 0644 (could not set group $SECRETS_GID); acceptable on a developer's machine only"
	fi
}

# new_secret ENV NAME: a random value, written under a temporary name and moved into place.
new_secret() {
	write_secret "$1" "$2" < <(random_secret)
	log "created secret secrets/$1/$2"
}

# write_secret ENV NAME: standard input becomes secrets/ENV/NAME, sealed before it is moved into
# place (callers redirect rather than pipe: a refusal in seal_secret must end the script itself).
write_secret() {
	local file="$PROJECT_ROOT/secrets/$1/$2" tmp
	tmp=$(mktemp "$file.XXXXXX")
	cat >"$tmp"
	seal_secret "$1" "$tmp"
	mv -f "$tmp" "$file"
}

# new_tls_pair ENV DOMAIN: a self-signed certificate so that TLS works on first start.
new_tls_pair() {
	local env=$1 domain=$2 dir="$PROJECT_ROOT/secrets/$1"
	require_cmd openssl "needed to make a first self-signed certificate for $env"
	openssl req -x509 -newkey rsa:2048 -nodes -days 90 -subj "/CN=$domain" \
		-addext "subjectAltName=DNS:$domain" \
		-keyout "$dir/tls_key.tmp" -out "$dir/tls_cert.tmp" 2>/dev/null ||
		die "openssl could not make a certificate for $domain"
	seal_secret "$env" "$dir/tls_key.tmp"
	seal_secret "$env" "$dir/tls_cert.tmp"
	mv -f "$dir/tls_key.tmp" "$dir/tls_key"
	mv -f "$dir/tls_cert.tmp" "$dir/tls_cert"
	log "warning: secrets/$env/tls_cert is SELF-SIGNED for $domain: replace tls_cert and tls_key with your certificate"
}

domain_of() {
	case $1 in
	dev) echo "localhost" ;;
	production) echo "golden-go.example.com" ;;
	esac
}

# ensure_env_ready ENV: first use of ENV makes env/ENV.env from its example and every missing
# secret file. Existing files are never touched: a database keeps the password it was made with.
ensure_env_ready() {
	local env=$1 name
	if [[ ! -f "$PROJECT_ROOT/env/$env.env" ]]; then
		cp "$PROJECT_ROOT/env/$env.env.example" "$PROJECT_ROOT/env/$env.env"
		log "created env/$env.env from env/$env.env.example"
	fi
	[[ -f "$PROJECT_ROOT/env/$env.app.env" ]] || new_app_env "$env"
	mkdir -p "$PROJECT_ROOT/secrets/$env"
	chmod 0700 "$PROJECT_ROOT/secrets" "$PROJECT_ROOT/secrets/$env"
	for name in $(secret_names "$env"); do
		[[ -s "$PROJECT_ROOT/secrets/$env/$name" ]] && continue
		case $name in
		tls_cert | tls_key) new_tls_pair "$env" "$(domain_of "$env")" ;;
		*) new_secret "$env" "$name" ;;
		esac
	done
	proxy_init "$env"
}

# new_app_env ENV: env/ENV.app.env, the app's environment, from its example. A project updated from
# a release where env/ENV.env was the app's environment too keeps its app settings: every key of
# env/ENV.env that no compose file (nor SCRIPT_SETTINGS) uses is carried over (env/ENV.env itself is left as it is).
new_app_env() {
	local env=$1 file="$PROJECT_ROOT/env/$1.app.env" compose_keys line key carried=()
	# shellcheck disable=SC2016  # a literal ${, the start of a Compose variable
	compose_keys=$(cat "$PROJECT_ROOT"/compose*.yaml | grep -o '\${[A-Z_][A-Z0-9_]*' | cut -c3- | sort -u)
	cp "$PROJECT_ROOT/env/$env.app.env.example" "$file.tmp"
	while IFS= read -r line; do
		[[ $line =~ ^([A-Za-z_][A-Za-z0-9_]*)= ]] || continue
		key=${BASH_REMATCH[1]}
		grep -qx "$key" <<<"$compose_keys" && continue
		is_one_of "$key" "${SCRIPT_SETTINGS[@]}" && continue
		# The latest value wins (Compose reads env files top to bottom too).
		{ grep -v "^$key=" "$file.tmp" || true; printf '%s\n' "$line"; } >"$file.tmp2"
		mv -f "$file.tmp2" "$file.tmp"
		carried+=("$key")
	done < <(cat "$PROJECT_ROOT/env/$env.env" 2>/dev/null || true)
	mv -f "$file.tmp" "$file"
	log "created env/$env.app.env from env/$env.app.env.example${carried[*]:+, with ${carried[*]} from env/$env.env (edit them in env/$env.app.env from now on)}"
}

# proxy_container ENV: the ID of ENV's running proxy container.
proxy_container() {
	local id
	id=$(docker ps --quiet --filter "label=com.docker.compose.project=$PROJECT_SLUG-$1" \
		--filter "label=com.docker.compose.service=proxy" | head -n 1)
	[[ -n $id ]] || { log "the proxy of $1 is not running"; return 1; }
	echo "$id"
}

# Seconds the proxy has to apply a switch of colour (scripts/deploy.sh, rollback.sh).
PROXY_SWITCH_TIMEOUT=${PROXY_SWITCH_TIMEOUT:-30}

# active_colour ENV: the colour the proxy routes to (.deploy/ENV/active-colour; blue at first).
active_colour() {
	local colour
	colour=$(cat "$PROJECT_ROOT/.deploy/$1/active-colour" 2>/dev/null || true)
	echo "${colour:-${COLOURS[0]}}"
}

# The proxy's control of the active colour: proxy_init ENV, proxy_route ENV COLOUR.
# shellcheck source=proxy.sh
source "$PROJECT_ROOT/scripts/lib/proxy.sh"
