# shellcheck shell=bash
# How Traefik is told which colour to route to. Its file provider watches .deploy/ENV/proxy/:
# routes.yml (a copy of config/traefik/ENV/dynamic.yml) and upstream.yml (the service
# "app": the active colour). Its read-only API says when a change is applied.
# Sourced by lib/common.sh, never run.

PROXY_CONTROL_FILE=upstream.yml
PROXY_API=http://127.0.0.1:8081/api/http

# proxy_init ENV: current routes, and the control file naming the active colour, before the
# proxy starts (every compose.sh call refreshes the copy of the routes where they changed: each
# write is a reload, after which Traefik holds the next change back for its throttle duration).
proxy_init() {
	local routes="$PROJECT_ROOT/.deploy/$1/proxy/routes.yml" source="$PROJECT_ROOT/config/traefik/$1/dynamic.yml"
	shared_dir "$PROJECT_ROOT/.deploy/$1/proxy"
	cmp -s "$source" "$routes" || write_atomically "$routes" <"$source"
	[[ -f "$PROJECT_ROOT/.deploy/$1/proxy/$PROXY_CONTROL_FILE" ]] || proxy_write "$1" "$(active_colour "$1")"
}

# proxy_write ENV COLOUR: the control file names COLOUR (Traefik applies it within seconds).
proxy_write() {
	printf 'http:\n  services:\n    app:\n      loadBalancer:\n        serversTransport: app\n        servers:\n          - url: "%s"\n' "$(colour_url "$2")" |
		write_atomically "$PROJECT_ROOT/.deploy/$1/proxy/$PROXY_CONTROL_FILE"
}

colour_url() { echo "http://${APP_SERVICE[$1]}:$APP_PORT"; }

# proxy_route ENV COLOUR: the running proxy sends every new request to COLOUR. Returns once
# Traefik's API shows the change applied; non-zero if it is not within PROXY_SWITCH_TIMEOUT.
proxy_route() {
	local container
	container=$(proxy_container "$1") || return 1
	proxy_write "$1" "$2"
	traefik_until "$container" services/app@file present "\"url\":\"$(colour_url "$2")\"" && return 0
	log "Traefik did not apply the route to ${APP_SERVICE[$2]} within ${PROXY_SWITCH_TIMEOUT} s"
	return 1
}

# proxy_maintenance ENV on|off [PAGE]: every request but the health path answered 503 with
# Retry-After, or served again; returns once Traefik's API shows the change. Traefik serves no
# files: PAGE is not shown (its own short 503 answer is).
proxy_maintenance() {
	local container
	container=$(proxy_container "$1") || return 1
	if [[ $2 == on ]]; then
		write_atomically "$PROJECT_ROOT/.deploy/$1/proxy/maintenance.yml" <"$PROJECT_ROOT/config/traefik/$1/maintenance.yml"
	else
		rm -f "$PROJECT_ROOT/.deploy/$1/proxy/maintenance.yml"
	fi
	traefik_until "$container" routers "$([[ $2 == on ]] && echo present || echo absent)" '"name":"maintenance@file"' && return 0
	log "Traefik did not apply maintenance $2 within ${PROXY_SWITCH_TIMEOUT} s"
	return 1
}

# traefik_until CONTAINER PATH present|absent TEXT: waits until what Traefik's API answers at
# PATH (under /api/http/) holds TEXT, or no longer does; non-zero after PROXY_SWITCH_TIMEOUT.
# One docker exec for the whole wait: each costs about 70 ms of CPU, taken from the requests.
traefik_until() {
	# shellcheck disable=SC2016  # expanded by the container's shell
	docker exec "$1" sh -c '
		end=$(($(date +%s) + $4))
		while [ "$(date +%s)" -lt "$end" ]; do
			if answer=$(wget -q -O - "$1" 2>/dev/null); then
				case $answer in *"$3"*) found=present ;; *) found=absent ;; esac
				[ "$found" = "$2" ] && exit 0
			fi
			sleep 0.1
		done
		exit 1' sh "$PROXY_API/$2" "$3" "$4" "$PROXY_SWITCH_TIMEOUT"
}
