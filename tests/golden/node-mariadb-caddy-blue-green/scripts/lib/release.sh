# shellcheck shell=bash
# Releases of an environment, shared by deploy.sh and rollback.sh: the lock, the release history
# (.deploy/ENV/releases.tsv), image lookups, and the switch from one colour to the other.
# Sourced after lib/common.sh, never run.

# What happens to the colour that served once the proxy routes to the other one: after_switch.
# shellcheck source=strategy.sh
source "$PROJECT_ROOT/scripts/lib/strategy.sh"

# release_init ENV: the settings checked, RELEASE_DIR, the lock (held until the script exits), the
# compose command line.
release_init() {
	release_settings
	RELEASE_ENV=$1
	RELEASE_DIR=$PROJECT_ROOT/.deploy/$1
	mkdir -p "$RELEASE_DIR"
	exec 9>"$RELEASE_DIR/lock"
	flock --nonblock 9 ||
		die "another deploy or rollback of $1 is running (lock .deploy/$1/lock): wait for it to finish"
	ensure_env_ready "$1"
	compose_cmd "$1"
	release_config
}

# release_settings: the settings of deploy.sh, rollback.sh and rotate-secret.sh (documented in
# scripts/deploy.sh) with their defaults; dies on one that is not a number before anything is
# done, rather than after a switch (e.g. at the drain's sleep).
release_settings() {
	local name
	DEPLOY_HEALTH_TIMEOUT=${DEPLOY_HEALTH_TIMEOUT:-180}
	DEPLOY_STOP_TIMEOUT=${DEPLOY_STOP_TIMEOUT:-30}
	DEPLOY_DRAIN_SECONDS=${DEPLOY_DRAIN_SECONDS:-1}
	for name in DEPLOY_HEALTH_TIMEOUT PROXY_SWITCH_TIMEOUT; do
		[[ ${!name} =~ ^[1-9][0-9]*$ ]] || die "$name '${!name}' must be a whole number of seconds, at least 1"
	done
	[[ $DEPLOY_STOP_TIMEOUT =~ ^[0-9]+$ ]] ||
		die "DEPLOY_STOP_TIMEOUT '$DEPLOY_STOP_TIMEOUT' must be a whole number of seconds (0: no time to finish)"
	[[ $DEPLOY_DRAIN_SECONDS =~ ^[0-9]+([.][0-9]+)?$ ]] ||
		die "DEPLOY_DRAIN_SECONDS '$DEPLOY_DRAIN_SECONDS' must be a number of seconds, e.g. 1 or 0.5"
}

VERSION_PLACEHOLDER='version-placeholder'

# release_config: RELEASE_IMAGE (the app's image, its version VERSION_PLACEHOLDER) and
# RELEASE_REPLICAS (APP_REPLICAS or the environment's default) from one reading of the merged
# configuration (each `compose config` takes a few tenths of a second). After compose_cmd.
release_config() {
	local config service=${APP_SERVICE[${COLOURS[0]}]}
	config=$(env "${VERSION_VAR[${COLOURS[0]}]}=$VERSION_PLACEHOLDER" "${REPLICAS_VAR[${COLOURS[0]}]}=" "${COMPOSE[@]}" config) ||
		die "the compose files of this environment do not load (scripts/compose.sh ENV config says why)"
	RELEASE_IMAGE=$(service_value "$config" "$service" image)
	[[ $RELEASE_IMAGE == *":$VERSION_PLACEHOLDER" ]] ||
		die "$service's image in the compose files ($RELEASE_IMAGE) must end with :\${${VERSION_VAR[${COLOURS[0]}]}...}: the version is its tag"
	RELEASE_REPLICAS=$(service_value "$config" "$service" replicas)
	RELEASE_REPLICAS=${RELEASE_REPLICAS:-1}
}

# service_value CONFIG SERVICE KEY: KEY's value in SERVICE's part of CONFIG (`compose config` output).
service_value() {
	awk -v s="  $2:" -v k="$3:" '$0 == s { inside = 1; next } /^  [^ ]/ { inside = 0 } inside && $1 == k { print $2; exit }' <<<"$1"
}

# image_of VERSION: the app's image reference for VERSION (both colours run the same image name).
image_of() { echo "${RELEASE_IMAGE%"$VERSION_PLACEHOLDER"}$1"; }

image_id() { docker image inspect --format '{{.Id}}' "$1" 2>/dev/null; }

# env_setting KEY: KEY's value in env/ENV.env (empty if unset).
env_setting() { env_value "$RELEASE_ENV" "$1"; }

# verify_signature REF IDENTITY ISSUER: cosign's keyless verification that REF (repository@digest)
# was signed by IDENTITY (a regular expression) through ISSUER, or die saying why.
verify_signature() {
	local out
	[[ -n $3 ]] || die "SIGNING_IDENTITY is set but SIGNING_ISSUER is empty: name the OIDC issuer (env/$RELEASE_ENV.env), e.g. https://token.actions.githubusercontent.com"
	require_cmd cosign "SIGNING_IDENTITY is set: install cosign (https://docs.sigstore.dev/cosign/system_config/installation/) or empty it in env/$RELEASE_ENV.env"
	out=$(cosign verify --certificate-identity-regexp "$2" --certificate-oidc-issuer "$3" "$1" 2>&1 >/dev/null) ||
		die "refusing to deploy $1: its signature does not verify for identity $2 ($(tail -n 1 <<<"$out"))"
}

# use_digest IMAGE DIGEST: IMAGE (repository:version) on this host is the image DIGEST names,
# pulled by digest and tagged; another image under that tag is refused (releases are never replaced).
use_digest() {
	local image=$1 ref="${1%:*}@$2"
	if image_id "$image" >/dev/null; then
		docker image inspect --format '{{range .RepoDigests}}{{.}} {{end}}' "$image" | grep -qF "$ref" ||
			die "$image on this host is not $ref: a release is never replaced (deploy a new version)"
		return 0
	fi
	docker pull --quiet "$ref" >/dev/null || die "cannot pull $ref (is this host logged in to the registry?)"
	docker tag "$ref" "$image"
}

# release_version [VERSION]: RELEASE_VERSION (VERSION, or this checkout's commit when it has no
# changes), RELEASE_COMMIT, and RELEASE_DIGEST (APP_IMAGE_DIGEST). Dies on a bad one: call it before
# anything is written.
release_version() {
	RELEASE_COMMIT=$(git -C "$PROJECT_ROOT" rev-parse --short=12 HEAD 2>/dev/null || true)
	RELEASE_VERSION=${1:-$RELEASE_COMMIT}
	[[ -n $RELEASE_VERSION ]] || die "no VERSION given and $PROJECT_ROOT is not a git checkout: name the version"
	require_version "$RELEASE_VERSION"
	if [[ -z ${1:-} ]] && checkout_changed; then
		die "the checkout has uncommitted changes: commit them, or name the version explicitly"
	fi
	RELEASE_DIGEST=${APP_IMAGE_DIGEST:-}
	[[ -z $RELEASE_DIGEST || $RELEASE_DIGEST =~ ^sha256:[0-9a-f]{64}$ ]] ||
		die "APP_IMAGE_DIGEST is not sha256: and 64 hex digits: $RELEASE_DIGEST"
}

# verify_release IMAGE: with SIGNING_IDENTITY set (env/ENV.env or the environment), IMAGE must come
# by digest and its cosign signature verify; dies otherwise.
verify_release() {
	local image=$1 identity
	identity=${SIGNING_IDENTITY:-$(env_setting SIGNING_IDENTITY)}
	[[ -n $identity ]] || return 0
	[[ -n $RELEASE_DIGEST ]] || die "env/$RELEASE_ENV.env sets SIGNING_IDENTITY: deploy an image by its digest (APP_IMAGE_DIGEST=sha256:..., as the pipeline does), never by tag alone"
	verify_signature "${image%:*}@$RELEASE_DIGEST" "$identity" "${SIGNING_ISSUER:-$(env_setting SIGNING_ISSUER)}"
	log "deploy $RELEASE_VERSION to $RELEASE_ENV: ${image%:*}@$RELEASE_DIGEST is signed by $identity"
}

# obtain_image IMAGE: IMAGE is on this host: as it was, pulled, or built from this checkout when
# the version is its commit and it has no changes (a named release is never rebuilt); dies otherwise.
obtain_image() {
	local image=$1 pull_error
	if image_id "$image" >/dev/null; then
		log "deploy $RELEASE_VERSION to $RELEASE_ENV: using image $image (releases are never rebuilt)"
	elif pull_error=$(docker pull --quiet "$image" 2>&1 >/dev/null); then
		log "deploy $RELEASE_VERSION to $RELEASE_ENV: pulled $image"
	elif [[ $RELEASE_VERSION == "$RELEASE_COMMIT" ]] && ! checkout_changed; then
		check_build_env "$RELEASE_ENV"
		log "deploy $RELEASE_VERSION to $RELEASE_ENV: building $image from this checkout (its commit, no changes)"
		build_image "$RELEASE_VERSION" >/dev/null || die "building $image failed"
	else
		die "image $image is not on this host and the pull failed ($(tail -n 1 <<<"$pull_error")): build it first (scripts/build.sh $RELEASE_ENV $RELEASE_VERSION) or push it to the registry"
	fi
}

# pushed_ref IMAGE: IMAGE (repository:tag) pushed to its registry, as repository:tag@digest, the
# reference a cluster (Swarm, Kubernetes) runs: every node the same image.
pushed_ref() {
	local image=$1 out digest
	out=$(docker push --quiet "$image" 2>&1) ||
		die "pushing $image failed ($(tail -n 1 <<<"$out")): APP_IMAGE in env/$RELEASE_ENV.env must be a registry path the cluster's nodes pull from, and this host logged in to it"
	digest=$(docker image inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' "$image" | sed -n "s|^${image%:*}@||p" | head -n 1)
	[[ -n $digest ]] || die "the registry gave no digest for $image"
	echo "$image@$digest"
}

# release_ref IMAGE: RELEASE_REF, IMAGE (repository:version) by digest as a cluster runs it: the
# digest given (APP_IMAGE_DIGEST, verified when SIGNING_IDENTITY is set), or the image obtained as
# for Compose and pushed to its registry. Logs which; dies saying why it cannot.
release_ref() {
	local image=$1
	verify_release "$image"
	if [[ -n $RELEASE_DIGEST ]]; then
		RELEASE_REF=$image@$RELEASE_DIGEST
		log "deploy $RELEASE_VERSION to $RELEASE_ENV: $RELEASE_REF (from the registry, by digest)"
	else
		obtain_image "$image"
		RELEASE_REF=$(pushed_ref "$image")
		log "deploy $RELEASE_VERSION to $RELEASE_ENV: pushed $RELEASE_REF"
	fi
}

# cluster_rollback PLACE ENV [VERSION]: a cluster rollback's arguments checked before any side
# effect (PLACE names the target in messages, e.g. "on a Swarm"), then the release lock taken and
# ROLLBACK_ENV, ROLLBACK_CURRENT, ROLLBACK_TARGET (VERSION, or the release before the current
# one) and ROLLBACK_DIGEST (the digest it was released with) set, or it dies saying why.
cluster_rollback() {
	local place=$1 asked='' arg
	shift
	[[ $# -ge 1 ]] || die "usage: scripts/rollback.sh ENV [VERSION]"
	ROLLBACK_ENV=$1
	shift
	for arg in "$@"; do
		case $arg in
		-*) die "unknown option $arg ($place: scripts/rollback.sh ENV [VERSION])" ;;
		*) [[ -z $asked ]] || die "usage: scripts/rollback.sh ENV [VERSION]"; asked=$arg ;;
		esac
	done
	require_env "$ROLLBACK_ENV"
	[[ -z $asked ]] || require_version "$asked"
	release_init "$ROLLBACK_ENV"
	# shellcheck disable=SC2034  # read by scripts/swarm/rollback.sh and scripts/kubernetes/rollback.sh
	ROLLBACK_CURRENT=$(current_version)
	rollback_target "$asked"
	ROLLBACK_DIGEST=$(release_field "$ROLLBACK_TARGET" 3)
	[[ $ROLLBACK_DIGEST =~ ^sha256:[0-9a-f]{64}$ ]] ||
		die "$ROLLBACK_TARGET was never released to $ROLLBACK_ENV by digest (no digest in .deploy/$ROLLBACK_ENV/releases.tsv)"
}

# rollback_target [VERSION]: ROLLBACK_TARGET is VERSION, or the release before the current one in
# the history; dies when there is none.
rollback_target() {
	local current
	ROLLBACK_TARGET=${1:-}
	[[ -f "$RELEASE_DIR/releases.tsv" ]] || die "no release history in .deploy/$RELEASE_ENV: nothing to roll back to"
	[[ -z $ROLLBACK_TARGET ]] || return 0
	current=$(current_version)
	ROLLBACK_TARGET=$(awk -F'\t' -v cur="$current" 'NR > 1 && $2 != cur { prev = $2 } END { print prev }' "$RELEASE_DIR/releases.tsv")
	[[ -n $ROLLBACK_TARGET ]] || die "no release before $current in .deploy/$RELEASE_ENV/releases.tsv"
}

# checkout_changed: this checkout has uncommitted changes to tracked files (never true outside git).
checkout_changed() { [[ -n $(git -C "$PROJECT_ROOT" status --porcelain --untracked-files=no 2>/dev/null) ]]; }

# build_image VERSION: builds the app's image for VERSION from this checkout.
build_image() { env "${VERSION_VAR[${COLOURS[0]}]}=$1" "${COMPOSE[@]}" build "${APP_SERVICE[${COLOURS[0]}]}"; }

# current_version: APP_VERSION of the env file (the release that serves).
current_version() { env_setting APP_VERSION; }

# set_env_values KEY=VALUE...: the env file keeps these values, so that every later `up` does too.
set_env_values() {
	local file="$PROJECT_ROOT/env/$RELEASE_ENV.env" tmp pair keys=()
	for pair in "$@"; do keys+=(-e "^${pair%%=*}="); done
	tmp=$(mktemp "$file.XXXXXX")
	grep -v "${keys[@]}" "$file" >"$tmp" || true
	printf '%s\n' "$@" >>"$tmp"
	chmod --reference="$file" "$tmp"
	mv -f "$tmp" "$file"
}

set_current_version() { set_env_values "APP_VERSION=$1"; }

# record_release VERSION IMAGE_ID BACKUP_ID KIND: one line of the history.
record_release() {
	local history="$RELEASE_DIR/releases.tsv"
	[[ -f $history ]] || printf 'time\tversion\timage\tbackup\tkind\n' >"$history"
	printf '%s\t%s\t%s\t%s\t%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$1" "$2" "${3:--}" "$4" >>"$history"
}

# release_field VERSION COLUMN: a column (3 image, 4 backup) of VERSION's newest history line.
release_field() {
	awk -F'\t' -v v="$1" -v c="$2" 'NR > 1 && $2 == v { f = $c } END { print f }' "$RELEASE_DIR/releases.tsv" 2>/dev/null
}

# project_containers SERVICE: IDs of SERVICE's running containers in this environment.
project_containers() {
	docker ps --quiet --filter "label=com.docker.compose.project=$PROJECT_SLUG-$RELEASE_ENV" \
		--filter "label=com.docker.compose.service=$1"
}

# app_containers [SERVICE...]: "container-id image-id" of every running replica of the app's
# services (both colours by default).
app_containers() {
	local id service
	for service in "${@:-${APP_SERVICES[@]}}"; do
		for id in $(project_containers "$service"); do
			echo "$id $(docker inspect --format '{{.Image}}' "$id")"
		done
	done
}

# unhealthy_reason [SERVICE]: why the first container of SERVICE (of the environment, by default)
# that should serve does not, on one line: its health check's last output; or, when it stopped or
# restarted, its exit code, with its last log lines on stderr (a crash's message is seldom the
# last line: Node.js ends with its version, Go with goroutine traces). One-off jobs that ended
# with exit code 0 are fine.
unhealthy_reason() {
	local id service status code health restarts said
	for id in $(docker ps --all --quiet --filter "label=com.docker.compose.project=$PROJECT_SLUG-$RELEASE_ENV" \
		${1:+--filter "label=com.docker.compose.service=$1"}); do
		read -r service status code restarts health < <(docker inspect --format \
			'{{index .Config.Labels "com.docker.compose.service"}} {{.State.Status}} {{.State.ExitCode}} {{.RestartCount}} {{if .State.Health}}{{.State.Health.Status}}{{end}}' "$id")
		if [[ $status == running && ${health:-healthy} == healthy ]] || [[ $status == created ]] ||
			[[ $status == exited && $code == 0 ]]; then
			continue
		elif [[ $status == running && ($restarts == 0 || $health == unhealthy) ]]; then
			# The last check's output, Go-quoted: one line whatever it printed.
			said=$(docker inspect --format '{{range .State.Health.Log}}{{printf "%q" .Output}}{{"\n"}}{{end}}' "$id" | sed '/^$/d' | tail -n 1)
			said=${said#\"}
			said=${said%\"}
			echo "$service is $health: its health check said: ${said%\\n}"
		else
			echo "the last log lines of $service:" >&2
			docker logs --tail 12 "$id" 2>&1 | tr -d '\r' | sed 's/^/    /' >&2
			echo "$service stopped with exit code $code ($restarts restarts; it is $status): its last log lines are above"
		fi
		return 0
	done
	echo "no container is unhealthy now"
}

# desired_replicas: how many replicas serve (APP_REPLICAS or the environment's default).
desired_replicas() { echo "$RELEASE_REPLICAS"; }

other_colour() { if [[ $1 == "${COLOURS[0]}" ]]; then echo "${COLOURS[1]}"; else echo "${COLOURS[0]}"; fi; }

# colour_serves COLOUR IMAGE_ID REPLICAS: COLOUR runs REPLICAS healthy replicas of IMAGE_ID.
colour_serves() {
	local line count=0
	while read -r line; do
		[[ -z $line ]] && continue
		[[ ${line#* } == "$2" ]] || return 1
		[[ $(docker inspect --format '{{if .State.Health}}{{.State.Health.Status}}{{end}}' "${line%% *}") == healthy ]] || return 1
		count=$((count + 1))
	done < <(app_containers "${APP_SERVICE[$1]}")
	((count >= $3))
}

# start_colour COLOUR VERSION REPLICAS: COLOUR runs REPLICAS replicas of VERSION, all healthy (it
# is not in the proxy's rotation meanwhile). Non-zero if they are not within DEPLOY_HEALTH_TIMEOUT.
start_colour() {
	env "${VERSION_VAR[$1]}=$2" "${REPLICAS_VAR[$1]}=$3" "${COMPOSE[@]}" up --detach --no-deps \
		--wait --wait-timeout "$DEPLOY_HEALTH_TIMEOUT" "${APP_SERVICE[$1]}" >/dev/null 2>&1
}

# retire_colour COLOUR: COLOUR is out of the proxy's rotation: its replicas finish the requests
# they have (SIGTERM, DEPLOY_STOP_TIMEOUT), stop, and its replica count becomes 0.
retire_colour() {
	local ids
	# Requests the proxy routed just before the switch reach their replica before it stops.
	sleep "$DEPLOY_DRAIN_SECONDS"
	ids=$(project_containers "${APP_SERVICE[$1]}")
	if [[ -n $ids ]]; then
		log "stopping the replicas of ${APP_SERVICE[$1]} (no request has been routed to them for ${DEPLOY_DRAIN_SECONDS} s)"
		# shellcheck disable=SC2086  # a list of IDs
		docker stop --time "$DEPLOY_STOP_TIMEOUT" $ids >/dev/null
		# shellcheck disable=SC2086
		docker rm $ids >/dev/null
	fi
	set_env_values "${REPLICAS_VAR[$1]}=0"
	log "${APP_SERVICE[$1]} finished its requests and stopped"
}

# first_deploy VERSION: brings up the whole stack with VERSION in the active colour.
first_deploy() {
	local colour vars
	colour=$(active_colour "$RELEASE_ENV")
	vars=("${VERSION_VAR[$colour]}=$1" "${REPLICAS_VAR[$colour]}=$(desired_replicas)")
	ensure_images "$RELEASE_ENV"
	env APP_VERSION="$1" "${vars[@]}" "${COMPOSE[@]}" up --detach --wait >/dev/null 2>&1 || return 1
	set_env_values "${vars[@]}"
	echo "$colour" | write_atomically "$RELEASE_DIR/active-colour"
	retire_service_app
}

# retire_service_app: projects rendered before v0.4.0 ran the rolling app as the one service
# "app"; once a colour serves, its containers stop gracefully.
retire_service_app() {
	local ids
	ids=$(project_containers app)
	[[ -n $ids ]] || return 0
	log "stopping the service app of an earlier template version (the app now runs as ${APP_SERVICES[*]})"
	# shellcheck disable=SC2086  # a list of IDs
	docker stop --time "$DEPLOY_STOP_TIMEOUT" $ids >/dev/null && docker rm $ids >/dev/null
}

# refresh_app VERSION STEP UNDO: the app in fresh containers that read the secret files again,
# without downtime: VERSION is created in the idle colour (even where it runs that image), STEP
# runs while it starts (e.g. the database learns a new password), the proxy routes to it once it
# is healthy, and the colour that served stops, whatever the strategy (it holds the values read
# before). On failure the old colour keeps serving, UNDO runs (e.g. the old value back), then the
# idle colour goes back to what it ran; non-zero.
refresh_app() {
	local version=$1 step=$2 undo=$3 active idle replicas
	active=$(active_colour "$RELEASE_ENV")
	idle=$(other_colour "$active")
	replicas=$(desired_replicas)
	log "$version: starting $replicas fresh replica(s) of ${APP_SERVICE[$idle]}"
	if ! env "${VERSION_VAR[$idle]}=$version" "${REPLICAS_VAR[$idle]}=$replicas" "${COMPOSE[@]}" up --detach \
		--no-deps --force-recreate "${APP_SERVICE[$idle]}" >/dev/null 2>&1 || ! "$step" ||
		! start_colour "$idle" "$version" "$replicas"; then
		log "$version: ${APP_SERVICE[$idle]} did not become healthy ($(unhealthy_reason "${APP_SERVICE[$idle]}")); it goes back to what it ran"
	elif proxy_switch "$idle" "$active"; then
		record_switch "$idle" "$active" "$version" "$replicas"
		retire_colour "$active"
		return 0
	fi
	"$undo"
	"${COMPOSE[@]}" up --detach --no-deps --force-recreate "${APP_SERVICE[$idle]}" >/dev/null 2>&1 || true
	return 1
}

# proxy_switch IDLE ACTIVE: the proxy routes to IDLE (confirmed); if it does not, traffic stays on
# ACTIVE and this is non-zero.
proxy_switch() {
	log "switching the proxy to ${APP_SERVICE[$1]} (its replicas are healthy)"
	proxy_route "$RELEASE_ENV" "$1" && return 0
	log "the proxy did not switch to ${APP_SERVICE[$1]}; traffic stays on ${APP_SERVICE[$2]}"
	proxy_route "$RELEASE_ENV" "$2" || true
	return 1
}

# record_switch IDLE ACTIVE VERSION REPLICAS: IDLE, serving REPLICAS replicas of VERSION, is the
# active colour from now on.
record_switch() {
	echo "$1" | write_atomically "$RELEASE_DIR/active-colour"
	set_env_values "${VERSION_VAR[$1]}=$3" "${REPLICAS_VAR[$1]}=$4"
	log "$3: the proxy routes to ${APP_SERVICE[$1]} (was ${APP_SERVICE[$2]})"
}

# switch_to VERSION: VERSION runs in the idle colour (started and health-checked unless it runs
# that exact image already), the proxy routes to it (confirmed), then the strategy's after_switch
# deals with the colour that served. On failure the old colour keeps serving; non-zero.
switch_to() {
	local version=$1 active idle target replicas
	active=$(active_colour "$RELEASE_ENV")
	idle=$(other_colour "$active")
	target=$(image_id "$(image_of "$version")") || die "image $(image_of "$version") is not on this host"
	replicas=$(desired_replicas)
	if colour_serves "$idle" "$target" "$replicas"; then
		log "$version: ${APP_SERVICE[$idle]} runs it already (image ${target:7:12})"
	else
		log "$version: starting $replicas replica(s) of ${APP_SERVICE[$idle]}, waiting for them to be healthy"
		if ! start_colour "$idle" "$version" "$replicas"; then
			log "$version: ${APP_SERVICE[$idle]} did not become healthy ($(unhealthy_reason "${APP_SERVICE[$idle]}")); it goes back to what it ran"
			"${COMPOSE[@]}" up --detach --no-deps "${APP_SERVICE[$idle]}" >/dev/null 2>&1 || true
			return 1
		fi
	fi
	proxy_switch "$idle" "$active" || return 1
	record_switch "$idle" "$active" "$version" "$replicas"
	after_switch "$active"
}
