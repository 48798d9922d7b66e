# shellcheck shell=bash
# How Traefik is told which colour to route to. Its file provider watches .deploy/ENV/proxy/:
# routes.yml (a copy of config/traefik/ENV/dynamic.yml) and upstream.yml (the service
# "app": the active colour, and a probe route that says when Traefik applies it). Its read-only API
# says when maintenance is on or off.
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
	[[ -f "$PROJECT_ROOT/.deploy/$1/proxy/$PROXY_CONTROL_FILE" ]] || proxy_write "$1" "$(active_colour "$1")" "$(probe_token)"
}

# proxy_requirements: what the deploy needs on the host besides Docker, checked before it starts.
proxy_requirements() {
	require_cmd curl "install curl: the deploy confirms Traefik's switch through its HTTP port"
}

# proxy_write ENV COLOUR TOKEN: the control file names COLOUR (Traefik applies it within a second),
# with the probe route: a request to the health path on the HTTP port that carries TOKEN in its
# X-Deploy-Probe header goes to COLOUR, and its answer carries TOKEN back. Only the file Traefik
# runs has that route, so the echo says it is applied; TOKEN is new at each write, and tells
# nobody else anything.
proxy_write() {
	write_atomically "$PROJECT_ROOT/.deploy/$1/proxy/$PROXY_CONTROL_FILE" <<ROUTE
http:
  routers:
    deploy-probe:
      rule: "Path(\`/healthz\`) && Header(\`X-Deploy-Probe\`, \`$3\`)"
      priority: 1000000
      entryPoints: [web]
      service: app
      middlewares: [deploy-probe]
  middlewares:
    deploy-probe:
      headers:
        customResponseHeaders:
          X-Deploy-Probe: "$3"
  services:
    app:
      loadBalancer:
        serversTransport: app
        servers:
          - url: "$(colour_url "$2")"
ROUTE
}

colour_url() { echo "http://${APP_SERVICE[$1]}:$APP_PORT"; }

probe_token() { openssl rand -hex 12; }

# proxy_route ENV COLOUR: the running proxy sends every new request to COLOUR. Returns once a
# request through Traefik's HTTP port reached COLOUR by the new route; non-zero if none does
# within PROXY_SWITCH_TIMEOUT.
proxy_route() {
	local container token
	container=$(proxy_container "$1") || return 1
	token=$(probe_token) || return 1
	proxy_write "$1" "$2" "$token"
	traefik_probe "$container" "$token" && return 0
	log "Traefik did not apply the route to ${APP_SERVICE[$2]} within ${PROXY_SWITCH_TIMEOUT} s"
	return 1
}

# traefik_probe CONTAINER TOKEN: waits until the probe route carrying TOKEN answers on CONTAINER's
# published HTTP port (from the host: a docker exec costs about 70 ms of CPU, which the requests
# in flight would feel at each check); non-zero after PROXY_SWITCH_TIMEOUT.
traefik_probe() {
	local address headers deadline=$(($(date +%s%N) + PROXY_SWITCH_TIMEOUT * 1000000000))
	address=$(published_http_address "$1") || return 1
	while (($(date +%s%N) < deadline)); do
		# --noproxy: a host's http_proxy setting would send this request elsewhere.
		headers=$(curl --silent --noproxy '*' --max-time 2 --output /dev/null --dump-header - \
			--header "X-Deploy-Probe: $2" "http://$address/healthz") || headers=
		[[ ${headers,,} == *"x-deploy-probe: $2"* ]] && return 0
		sleep 0.1
	done
	return 1
}

# published_http_address CONTAINER: HOST:PORT where the host reaches CONTAINER's HTTP entry point
# (loopback when it is published on every address).
published_http_address() {
	local published
	published=$(docker port "$1" 8080/tcp) || return 1
	published=${published%%$'\n'*}
	[[ -n $published ]] || { log "the proxy publishes no HTTP port"; return 1; }
	case ${published%:*} in
	0.0.0.0) echo "127.0.0.1:${published##*:}" ;;
	"[::]") echo "[::1]:${published##*:}" ;;
	*) echo "$published" ;;
	esac
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
