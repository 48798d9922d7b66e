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

# image_of VERSION: the app's image reference for VERSION, from the merged configuration
# (`config --images app` would list its dependencies' images too).
image_of() {
	APP_VERSION=$1 "${COMPOSE[@]}" config |
		awk '/^  app:$/ { app = 1; next } /^  [^ ]/ { app = 0 } app && /^    image: / { print $2; exit }'
}

image_id() { docker image inspect --format '{{.Id}}' "$1" 2>/dev/null; }

# current_version: APP_VERSION of the env file (what `compose up` runs).
current_version() { sed -n 's/^APP_VERSION=//p' "$PROJECT_ROOT/env/$RELEASE_ENV.env" | tail -n 1; }

# set_current_version VERSION: the env file names VERSION, so that every later `up` keeps it.
set_current_version() {
	local file="$PROJECT_ROOT/env/$RELEASE_ENV.env" tmp
	tmp=$(mktemp "$file.XXXXXX")
	grep -v '^APP_VERSION=' "$file" >"$tmp" || true
	echo "APP_VERSION=$1" >>"$tmp"
	chmod --reference="$file" "$tmp"
	mv -f "$tmp" "$file"
}

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

# app_containers: "container-id image-id" of every running app replica.
app_containers() {
	local id
	for id in $(docker ps --quiet --filter "label=com.docker.compose.project=$PROJECT_SLUG-$RELEASE_ENV" \
		--filter "label=com.docker.compose.service=app"); do
		echo "$id $(docker inspect --format '{{.Image}}' "$id")"
	done
}

desired_replicas() {
	local replicas
	replicas=$("${COMPOSE[@]}" config | sed -n 's/^ *replicas: *\([0-9][0-9]*\)$/\1/p' | head -n 1)
	echo "${replicas:-1}"
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

# switch_to VERSION: replaces the app replicas by replicas of VERSION, one at a time: each new
# replica must be healthy before an old one stops. New replicas are invisible to the proxy until
# healthy (Docker's DNS would list them as soon as they start). On failure the replicas it
# started are removed, the old ones keep serving, and it returns non-zero.
switch_to() {
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
