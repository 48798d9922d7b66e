# shellcheck shell=bash
# How nginx is told which colour to route to. config/nginx/ENV/app-route.conf has nginx look, at
# every request, for a marker file in .deploy/ENV/proxy/ (route-SERVICE, one per colour; exactly one
# exists): a switch is one file created or removed, no reload, so every request that starts after
# it goes to the new colour. A configuration changed since nginx loaded it (an edit, a copier
# update) is applied with the switch: the marker is written, nginx reloads, and the switch returns
# once no worker of the previous configuration accepts requests (one step from the configuration
# nginx runs, whatever it is, to the new one routing to COLOUR). Sourced by lib/common.sh, never run.

PROXY_ROUTE_MARKER=route-
PROXY_CONFIG_DIR=config/nginx
PROXY_CONFIG_IN_CONTAINER=/etc/nginx/deploy/nginx.conf
# .deploy/ENV/PROXY_LOADED_FILE: "CONTAINER EPOCH", the proxy container these scripts last had
# reload its configuration, and when (before the reload: a change during it counts as after).
PROXY_LOADED_FILE=proxy-loaded

# proxy_init ENV: a marker names the active colour before the proxy starts.
proxy_init() {
	local colour
	for colour in "${COLOURS[@]}"; do
		[[ ! -f "$PROJECT_ROOT/.deploy/$1/proxy/$PROXY_ROUTE_MARKER${APP_SERVICE[$colour]}" ]] || return 0
	done
	proxy_write "$1" "$(active_colour "$1")"
}

# proxy_requirements: what the deploy needs on the host besides Docker: nothing more.
proxy_requirements() { :; }

# proxy_write ENV COLOUR: COLOUR's marker is created, then the others removed: nginx routes to
# COLOUR from the one of these steps that changes its answer.
proxy_write() {
	local dir="$PROJECT_ROOT/.deploy/$1/proxy" colour
	shared_dir "$dir"
	write_atomically "$dir/$PROXY_ROUTE_MARKER${APP_SERVICE[$2]}" </dev/null
	for colour in "${COLOURS[@]}"; do
		[[ $colour == "$2" ]] || rm -f "$dir/$PROXY_ROUTE_MARKER${APP_SERVICE[$colour]}"
	done
}

# proxy_route ENV COLOUR: the running proxy sends every new request to COLOUR. Non-zero if the
# proxy is not running, or nginx refused a changed configuration (lib/release.sh then routes back).
proxy_route() {
	local container
	container=$(proxy_container "$1") || return 1
	if proxy_config_loaded "$1" "$container"; then
		proxy_write "$1" "$2"
		return 0
	fi
	log "$PROXY_CONFIG_DIR/$1/ changed since nginx loaded it: reloading it with the switch"
	proxy_write "$1" "$2"
	nginx_reload "$1" "$container"
}

# proxy_config_loaded ENV CONTAINER: whether CONTAINER's nginx runs config/nginx/ENV/ as it is: it
# started, or these scripts reloaded it, after the newest change to a file there (in whole seconds;
# a change in the same second counts as after).
proxy_config_loaded() {
	local env=$1 container=$2 changed loaded=0 started id at
	changed=$(find "$PROJECT_ROOT/$PROXY_CONFIG_DIR/$env" -type f -printf '%Ts\n' | sort -n | tail -n 1) || return 1
	started=$(docker inspect --format '{{.State.StartedAt}}' "$container") || return 1
	started=$(date -d "$started" +%s) || return 1
	if read -r id at <"$PROJECT_ROOT/.deploy/$env/$PROXY_LOADED_FILE" 2>/dev/null &&
		[[ $id == "$container" && $at =~ ^[0-9]+$ ]]; then
		loaded=$at
	fi
	((started < loaded)) || loaded=$started
	((${changed:-0} < loaded))
}

# proxy_maintenance ENV on|off [PAGE]: every request but the health path answered 503 with
# Retry-After and PAGE (an HTML file), or served again; nginx reloads (maintenance.conf is included).
proxy_maintenance() {
	local container
	container=$(proxy_container "$1") || return 1
	maintenance_write "$@"
	nginx_reload "$1" "$container"
}

maintenance_write() {
	local dir="$PROJECT_ROOT/.deploy/$1/proxy"
	if [[ $2 == on ]]; then
		write_atomically "$dir/maintenance.html" <"$3"
		printf '# scripts/maintenance.sh %s on\nerror_page 503 /maintenance.html;\nreturn 503;\n' "$1" |
			write_atomically "$dir/maintenance.conf"
	else
		rm -f "$dir/maintenance.conf"
	fi
}

# nginx_reload ENV CONTAINER: nginx reloads its configuration; returns once no worker of the
# previous configuration accepts requests, and records when (PROXY_LOADED_FILE). Non-zero if nginx
# refused the configuration or its old workers still accept after PROXY_SWITCH_TIMEOUT.
nginx_reload() {
	local env=$1 container=$2 status=0 since
	since=$(date +%s)
	# One docker exec for the whole switch: each costs about 70 ms of CPU, taken from the requests.
	docker exec "$container" sh -c "$NGINX_RELOAD" sh "$PROXY_CONFIG_IN_CONTAINER" "$PROXY_SWITCH_TIMEOUT" || status=$?
	((status != 3)) || log "nginx did not retire the workers of its previous configuration within ${PROXY_SWITCH_TIMEOUT} s"
	((status != 0)) || printf '%s %s\n' "$container" "$since" | write_atomically "$PROJECT_ROOT/.deploy/$env/$PROXY_LOADED_FILE"
	return "$status"
}

# Run in the proxy's container: sh -c "$NGINX_RELOAD" sh CONFIG TIMEOUT. Checks CONFIG (exit 2 if
# refused), reloads, then waits until no worker that accepted before does (exit 3 after TIMEOUT s).
# shellcheck disable=SC2016  # expanded by the container's shell
NGINX_RELOAD='
workers() {
	for p in /proc/[0-9]*; do
		c=$(tr "\0" " " <"$p/cmdline" 2>/dev/null) || continue
		case $c in *"is shutting down"*) ;; "nginx: worker process"*) echo "${p#/proc/}" ;; esac
	done
}
before=$(workers)
nginx -q -t -c "$1" || exit 2
nginx -q -c "$1" -s reload || exit 2
end=$(($(date +%s) + $2))
while [ "$(date +%s)" -lt "$end" ]; do
	now=" $(echo $(workers)) "
	old=no
	for p in $before; do case $now in *" $p "*) old=yes ;; esac; done
	[ "$old" = no ] && exit 0
	sleep 0.1
done
exit 3'
