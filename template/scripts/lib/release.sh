# shellcheck shell=bash
# Releases of an environment, shared by deploy.sh and rollback.sh: the lock, the release history
# (.deploy/ENV/releases.tsv), image lookups, and the switch from one version to another.
# Sourced after lib/common.sh, never run.

# release_init ENV: RELEASE_DIR, the lock (held until the script exits), the compose command line.
release_init() {
	RELEASE_ENV=$1
	RELEASE_DIR=$PROJECT_ROOT/.deploy/$1
	mkdir -p "$RELEASE_DIR"
	exec 9>"$RELEASE_DIR/lock"
	flock --nonblock 9 ||
		die "another deploy or rollback of $1 is running (lock .deploy/$1/lock): wait for it to finish"
	ensure_env_ready "$1"
	compose_cmd "$1"
	DEPLOY_HEALTH_TIMEOUT=${DEPLOY_HEALTH_TIMEOUT:-180}
	DEPLOY_STOP_TIMEOUT=${DEPLOY_STOP_TIMEOUT:-30}
	# Longer than the proxy's DNS refresh (2 s): it knows a new replica before an old one goes.
	DEPLOY_SETTLE_SECONDS=${DEPLOY_SETTLE_SECONDS:-4}
}

# config_value SERVICE KEY [VAR=VALUE...]: KEY's value in SERVICE's part of the merged
# configuration, with the given variables set (`config --images` would list dependencies too).
config_value() {
	local service=$1 key=$2
	shift 2
	env "$@" "${COMPOSE[@]}" config |
		awk -v s="  $service:" -v k="$key:" '$0 == s { inside = 1; next } /^  [^ ]/ { inside = 0 } inside && $1 == k { print $2; exit }'
}

# version_var SERVICE: the variable naming the version an app service runs (APP_BLUE_VERSION...).
version_var() {
	local name=${1#app}
	name=${name#-}
	echo "APP${name:+_${name^^}}_VERSION"
}

# image_of VERSION: the app's image reference for VERSION.
image_of() { config_value "${APP_SERVICES[0]}" image "$(version_var "${APP_SERVICES[0]}")=$1"; }

image_id() { docker image inspect --format '{{.Id}}' "$1" 2>/dev/null; }

# build_image VERSION: builds the app's image for VERSION from this checkout.
build_image() { env "$(version_var "${APP_SERVICES[0]}")=$1" "${COMPOSE[@]}" build "${APP_SERVICES[0]}"; }

# current_version: APP_VERSION of the env file (the release that serves).
current_version() { sed -n 's/^APP_VERSION=//p' "$PROJECT_ROOT/env/$RELEASE_ENV.env" | tail -n 1; }

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

# app_containers [SERVICE...]: "container-id image-id" of every running replica of the app's
# services (all of them by default).
app_containers() {
	local id service
	for service in "${@:-${APP_SERVICES[@]}}"; do
		for id in $(docker ps --quiet --filter "label=com.docker.compose.project=$PROJECT_SLUG-$RELEASE_ENV" \
			--filter "label=com.docker.compose.service=$service"); do
			echo "$id $(docker inspect --format '{{.Image}}' "$id")"
		done
	done
}

# desired_replicas: how many replicas serve (APP_REPLICAS or the environment's default).
desired_replicas() {
	local replicas
	replicas=$(config_value "${APP_SERVICES[0]}" replicas APP_BLUE_REPLICAS=)
	echo "${replicas:-1}"
}

# first_deploy VERSION: brings up the whole stack with VERSION (nothing served before).
first_deploy() {
	local vars=() prefix
	if [[ $DEPLOY_STRATEGY == blue-green ]]; then
		prefix=$(colour_prefix "$(active_colour "$RELEASE_ENV")")
		vars=("${prefix}_VERSION=$1" "${prefix}_REPLICAS=$(desired_replicas)")
	fi
	env APP_VERSION="$1" "${vars[@]}" "${COMPOSE[@]}" up --detach --wait >/dev/null 2>&1 || return 1
	((${#vars[@]} == 0)) || set_env_values "${vars[@]}"
}

# switch_to VERSION: makes VERSION serve, with the project's deploy strategy. On failure the old
# version keeps serving and it returns non-zero.
switch_to() {
	if [[ $DEPLOY_STRATEGY == blue-green ]]; then switch_colour "$1"; else switch_replicas "$1"; fi
}

# wait_healthy CONTAINER: until its health check passes; fails when unhealthy, exited or too slow.
wait_healthy() {
	local deadline=$((SECONDS + DEPLOY_HEALTH_TIMEOUT)) status
	while ((SECONDS < deadline)); do
		status=$(docker inspect --format '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$1" 2>/dev/null) || return 1
		case $status in
		healthy) return 0 ;;
		unhealthy | exited | dead) return 1 ;;
		esac
		sleep 1
	done
	return 1
}

# retire CONTAINER: a graceful stop (SIGTERM: requests in flight finish), then removal.
retire() {
	docker stop --time "$DEPLOY_STOP_TIMEOUT" "$1" >/dev/null
	docker rm "$1" >/dev/null
}

# switch_replicas VERSION (rolling): replaces the app replicas by replicas of VERSION, one at a time: each new
# replica must be healthy before an old one stops. New replicas are invisible to the proxy until
# healthy (Docker's DNS would list them as soon as they start). On failure the replicas it
# started are removed, the old ones keep serving, and it returns non-zero.
switch_replicas() {
	local version=$1 target line id new replicas count
	local old=() kept=() started=()
	target=$(image_id "$(image_of "$version")") || die "image $(image_of "$version") is not on this host"
	replicas=$(desired_replicas)
	while read -r line; do
		[[ -z $line ]] && continue
		if [[ ${line#* } == "$target" ]]; then kept+=("${line%% *}"); else old+=("${line%% *}"); fi
	done < <(app_containers)
	count=$((${#kept[@]} + ${#old[@]}))
	while ((${#kept[@]} + ${#started[@]} < replicas)); do
		count=$((count + 1))
		if ! APP_VERSION=$version "${COMPOSE[@]}" up --no-start --no-deps --no-recreate --scale "app=$count" app >/dev/null 2>&1; then
			remove_started "${started[@]}"
			return 1
		fi
		new=$(created_replica)
		[[ -n $new ]] || { remove_started "${started[@]}"; return 1; }
		started+=("$new")
		hide_from_proxy "$new"
		docker start "$new" >/dev/null
		log "$version: new replica $(docker inspect --format '{{.Name}}' "$new" | tr -d /), waiting for it to be healthy"
		if ! wait_healthy "$new"; then
			log "$version: the new replica did not become healthy; removing what this switch started"
			remove_started "${started[@]}"
			return 1
		fi
		show_to_proxy "$new"
		sleep "$DEPLOY_SETTLE_SECONDS"
		if ((${#old[@]} > 0)); then
			retire "${old[0]}"
			old=("${old[@]:1}")
			count=$((count - 1))
		fi
	done
	for id in "${old[@]}"; do retire "$id"; done
}

# created_replica: the app replica that compose created but did not start.
created_replica() {
	docker ps --all --quiet --filter status=created --filter "label=com.docker.compose.project=$PROJECT_SLUG-$RELEASE_ENV" \
		--filter "label=com.docker.compose.service=app" | head -n 1
}

# The networks a replica shares with the proxy: where the proxy finds it by the name "app".
proxy_networks() {
	local proxy
	proxy=$(docker ps --quiet --filter "label=com.docker.compose.project=$PROJECT_SLUG-$RELEASE_ENV" \
		--filter "label=com.docker.compose.service=proxy" | head -n 1)
	[[ -n $proxy ]] || return 0
	comm -12 <(networks_of "$1") <(networks_of "$proxy")
}

networks_of() { docker inspect --format '{{range $name, $_ := .NetworkSettings.Networks}}{{println $name}}{{end}}' "$1" | sed '/^$/d' | sort; }

hide_from_proxy() {
	local network
	HIDDEN_NETWORKS=$(proxy_networks "$1")
	for network in $HIDDEN_NETWORKS; do docker network disconnect "$network" "$1"; done
}

show_to_proxy() {
	local network
	for network in $HIDDEN_NETWORKS; do docker network connect --alias app "$network" "$1"; done
}

remove_started() {
	local id
	for id in "$@"; do docker rm --force "$id" >/dev/null 2>&1 || true; done
}

# --- blue-green ------------------------------------------------------------------------------

other_colour() { if [[ $1 == blue ]]; then echo green; else echo blue; fi; }
colour_prefix() { echo "APP_${1^^}"; }

# colour_serves COLOUR IMAGE_ID REPLICAS: COLOUR runs REPLICAS healthy replicas of IMAGE_ID.
colour_serves() {
	local line count=0
	while read -r line; do
		[[ -z $line ]] && continue
		[[ ${line#* } == "$2" ]] || return 1
		[[ $(docker inspect --format '{{if .State.Health}}{{.State.Health.Status}}{{end}}' "${line%% *}") == healthy ]] || return 1
		count=$((count + 1))
	done < <(app_containers "app-$1")
	((count >= $3))
}

# switch_colour VERSION (blue-green): VERSION runs in the idle colour (started and health-checked
# unless it already runs that exact image), then the proxy is pointed at it with a configuration
# reload or re-read. The colour that served keeps running its release: a rollback to it starts nothing.
switch_colour() {
	local version=$1 active idle prefix target replicas
	active=$(active_colour "$RELEASE_ENV")
	idle=$(other_colour "$active")
	prefix=$(colour_prefix "$idle")
	target=$(image_id "$(image_of "$version")") || die "image $(image_of "$version") is not on this host"
	replicas=$(desired_replicas)
	if colour_serves "$idle" "$target" "$replicas"; then
		log "$version: the idle $idle colour runs it already (image ${target:7:12})"
	else
		log "$version: starting $replicas replica(s) in the idle $idle colour, waiting for them to be healthy"
		if ! env "${prefix}_VERSION=$version" "${prefix}_REPLICAS=$replicas" "${COMPOSE[@]}" up --detach --no-deps \
			--wait --wait-timeout "$DEPLOY_HEALTH_TIMEOUT" "app-$idle" >/dev/null 2>&1; then
			log "$version: the $idle colour did not become healthy; it goes back to the release it had"
			"${COMPOSE[@]}" up --detach --no-deps "app-$idle" >/dev/null 2>&1 || true
			return 1
		fi
	fi
	write_proxy_upstream "$RELEASE_ENV" "$idle"
	if ! reload_proxy >/dev/null; then
		log "the proxy refused the configuration for $idle; traffic stays on $active"
		write_proxy_upstream "$RELEASE_ENV" "$active"
		reload_proxy >/dev/null 2>&1 || true
		return 1
	fi
	set_env_values "${prefix}_VERSION=$version" "${prefix}_REPLICAS=$replicas"
	# Requests already sent to the old colour finish there; it stays up for a rollback.
	sleep "$DEPLOY_SETTLE_SECONDS"
	log "$version: traffic moved from $active to $idle; $active keeps $(current_version) for a rollback"
}
