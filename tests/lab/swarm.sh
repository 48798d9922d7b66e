#!/usr/bin/env bash
# A real Docker Swarm of N nodes on this machine, for the e2e tests (docs/testing.md). Each node is
# a dockerd in its own network namespace on a test-only bridge (no privileged containers, no
# docker-in-docker). A registry (Debian's docker-registry) listens on this host's 127.0.0.1:PORT and,
# through socat, on 127.0.0.1:PORT inside every node too: an image pushed from here is pulled by
# the nodes under the same name.
#
#   tests/lab/swarm.sh up [N]   N nodes (default 3; node 1 is the manager). Prints `export KEY=VALUE`:
#                               SWARM_HOST (DOCKER_HOST of the manager), SWARM_REGISTRY, SWARM_NODES
#                               (the nodes' DOCKER_HOSTs), SWARM_NODE_HOST (the same with {node} for a
#                               hostname, as a rendered project's setting), SWARM_ADDRESSES, SWARM_EDGE (node 1's
#                               address: where its published ports answer from this host),
#                               SWARM_IPSEC (yes/no: whether encrypted overlay networks can work here).
#   tests/lab/swarm.sh kill N   worker N dies: its link goes down and its dockerd is killed.
#   tests/lab/swarm.sh down     removes everything `up` made, by the PIDs and names it recorded.
#
# Settings: SWARM_LAB_STATE (default /run/dp-swarm-lab), SWARM_LAB_NET (the bridge's /24, default
# 10.214.9), SWARM_LAB_POOL (overlay networks, default 10.215.0.0/16). Traffic goes only to the
# addresses made here and to 127.0.0.1.
set -Eeuo pipefail

state=${SWARM_LAB_STATE:-/run/dp-swarm-lab}
net=${SWARM_LAB_NET:-10.214.9}
pool=${SWARM_LAB_POOL:-10.215.0.0/16}
bridge=dpswarm0

log() { printf 'swarm-lab: %s\n' "$*" >&2; }
die() {
	printf 'swarm-lab: %s\n' "$*" >&2
	exit 1
}

require() {
	local tool
	for tool in "$@"; do
		command -v "$tool" >/dev/null 2>&1 || die "$tool is missing: run tests/lab/install-tools.sh"
	done
}

node_addr() { printf '%s.%d' "$net" $((10 + $1)); }
node_sock() { printf '%s/node%d.sock' "$state" "$1"; }
node_docker() {
	local i=$1
	shift
	docker -H "unix://$(node_sock "$i")" "$@"
}

wait_for() { # wait_for SECONDS WHAT COMMAND...
	local seconds=$1 what=$2 deadline
	shift 2
	deadline=$((SECONDS + seconds))
	until "$@" >/dev/null 2>&1; do
		((SECONDS < deadline)) || die "$what did not happen within $seconds s"
		sleep 0.5
	done
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# start_bg NAME COMMAND...: a background process in its own session, its PID in $state/NAME.pid.
start_bg() {
	local name=$1
	shift
	setsid "$@" >"$state/$name.log" 2>&1 </dev/null &
	echo $! >"$state/$name.pid"
}

make_network() {
	local n=$1 i
	ip link add "$bridge" type bridge
	ip addr add "$net.1/24" dev "$bridge"
	ip link set "$bridge" up
	echo "$bridge" >"$state/bridge"
	# The host's own dockerd drops bridged traffic in FORWARD; this bridge's own traffic passes.
	iptables -I FORWARD -i "$bridge" -o "$bridge" -j ACCEPT
	echo 1 >"$state/forward-rule"
	for ((i = 1; i <= n; i++)); do
		ip netns add "dp-swarm-$i"
		echo "dp-swarm-$i" >>"$state/namespaces"
		ip link add "dpsw$i" type veth peer name eth0 netns "dp-swarm-$i"
		ip link set "dpsw$i" master "$bridge" up
		ip -n "dp-swarm-$i" addr add "$(node_addr "$i")/24" dev eth0
		ip -n "dp-swarm-$i" link set eth0 up
		ip -n "dp-swarm-$i" link set lo up
	done
}

start_registry() {
	local port=$1
	mkdir -p "$state/registry"
	cat >"$state/registry.yml" <<-EOF
		version: 0.1
		storage:
		  filesystem:
		    rootdirectory: $state/registry
		http:
		  addr: 0.0.0.0:$port
		log:
		  level: warn
	EOF
	start_bg registry docker-registry serve "$state/registry.yml"
	wait_for 30 "the registry answering" curl -fsS "http://127.0.0.1:$port/v2/"
}

start_node() {
	local i=$1 port=$2
	mkdir -p "$state/node$i"
	# Inside the namespace, 127.0.0.1:PORT is the registry too (Docker trusts loopback registries).
	start_bg "registry-forward$i" nsenter --net="/var/run/netns/dp-swarm-$i" \
		socat "TCP-LISTEN:$port,bind=127.0.0.1,fork,reuseaddr" "TCP:$net.1:$port"
	# nsenter, not `ip netns exec` (that remounts /sys and hides the cgroups); a hostname of its own.
	start_bg "node$i" unshare --uts sh -c "hostname node$i && exec nsenter --net=/var/run/netns/dp-swarm-$i \
		dockerd --data-root '$state/node$i/data' --exec-root '/run/dp-swarm-$i' -H 'unix://$(node_sock "$i")' \
		--pidfile '$state/node$i/dockerd.pid' --bridge none --iptables=false --cgroup-parent 'dp-swarm-$i' \
		--no-new-privileges"
}

up() {
	local n=${1:-3} port i token manager
	[[ $n =~ ^[1-9]$ ]] || die "usage: swarm.sh up [N]: N nodes, 1 to 9 (got '$n')"
	[[ $EUID -eq 0 ]] || die "needs root (network namespaces, a bridge, dockerd)"
	require docker dockerd docker-registry socat nsenter unshare ip iptables curl python3
	[[ ! -e "$state" ]] || die "$state exists: a lab is up (or was left behind); run swarm.sh down first"
	ip link show "$bridge" >/dev/null 2>&1 && die "bridge $bridge exists already: run swarm.sh down first"
	mkdir -p "$state"
	trap 'log "up failed: cleaning up"; down >&2' ERR
	port=$(free_port)
	echo "$port" >"$state/registry-port"
	make_network "$n"
	# Encrypted overlay networks need the kernel's IPsec (ESP with AES-GCM); some kernels lack it.
	local ipsec=yes
	ip -n dp-swarm-1 xfrm state add src "$(node_addr 1)" dst "$net.1" proto esp spi 0x00000d01 reqid 3329 \
		mode transport aead 'rfc4106(gcm(aes))' 0x000102030405060708090a0b0c0d0e0f10111213 128 >/dev/null 2>&1 || ipsec=no
	ip -n dp-swarm-1 xfrm state flush >/dev/null 2>&1 || true
	start_registry "$port"
	for ((i = 1; i <= n; i++)); do start_node "$i" "$port"; done
	for ((i = 1; i <= n; i++)); do wait_for 60 "node $i's dockerd answering" node_docker "$i" info; done
	manager=$(node_addr 1)
	node_docker 1 swarm init --advertise-addr "$manager" --listen-addr "$manager:2377" \
		--default-addr-pool "$pool" >/dev/null
	token=$(node_docker 1 swarm join-token -q worker)
	for ((i = 2; i <= n; i++)); do
		node_docker "$i" swarm join --advertise-addr "$(node_addr "$i")" --listen-addr "$(node_addr "$i"):2377" \
			--token "$token" "$manager:2377" >/dev/null
	done
	wait_for 60 "$n nodes ready" sh -c "[ \"\$(docker -H unix://$(node_sock 1) node ls --format '{{.Status}}' | grep -c Ready)\" -eq $n ]"
	trap - ERR
	local hosts=() addresses=()
	for ((i = 1; i <= n; i++)); do
		hosts+=("unix://$(node_sock "$i")")
		addresses+=("$(node_addr "$i")")
	done
	log "$n nodes up; registry at 127.0.0.1:$port"
	printf 'export SWARM_HOST=unix://%s\n' "$(node_sock 1)"
	printf 'export SWARM_REGISTRY=127.0.0.1:%s\n' "$port"
	printf 'export SWARM_NODES="%s"\n' "${hosts[*]}"
	printf 'export SWARM_NODE_HOST=unix://%s/{node}.sock\n' "$state"
	printf 'export SWARM_ADDRESSES="%s"\n' "${addresses[*]}"
	printf 'export SWARM_EDGE=%s\n' "$manager"
	printf 'export SWARM_IPSEC=%s\n' "$ipsec"
}

stop_pidfile() { # stop_pidfile FILE: TERM, then KILL after 20 s
	local file=$1 pid i
	[[ -f $file ]] || return 0
	pid=$(cat "$file")
	kill -TERM -- "$pid" 2>/dev/null || return 0
	for ((i = 0; i < 40; i++)); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.5
	done
	kill -KILL -- "$pid" 2>/dev/null || true
}

# kill_node_processes NODE: every process in NODE's network namespace or cgroups, then the cgroups.
kill_node_processes() {
	local ns=$1 pids=()
	mapfile -t pids < <({
		ip netns pids "$ns" 2>/dev/null || true
		find /sys/fs/cgroup/ -path "*/$ns/*" -name cgroup.procs -exec cat {} + 2>/dev/null || true
	} | sort -u)
	[[ ${#pids[@]} -eq 0 ]] || kill -KILL "${pids[@]}" 2>/dev/null || true
	sleep 0.5
	find /sys/fs/cgroup/ -depth -type d -path "*/$ns*" -exec rmdir {} + 2>/dev/null || true
}

down() {
	local file ns name
	[[ -d $state ]] || {
		log "nothing to remove ($state does not exist)"
		return 0
	}
	for file in "$state"/node*.sock; do
		[[ -S $file ]] && timeout 20 docker -H "unix://$file" swarm leave --force >/dev/null 2>&1 || true
	done
	for file in "$state"/node*/dockerd.pid "$state"/node*.pid "$state"/registry*.pid; do
		stop_pidfile "$file"
	done
	# What a killed node left running (containerd, shims, containers): by namespace and cgroup.
	if [[ -f $state/namespaces ]]; then
		while read -r ns; do kill_node_processes "$ns"; done <"$state/namespaces"
	fi
	# What the nodes left mounted (containers' layers, network sandboxes), then their files.
	{ grep -oE " ($state|/run/dp-swarm-[0-9])/[^ ]*" /proc/self/mounts || true; } | sort -r |
		while read -r mount; do umount -l "$mount" || true; done
	if [[ -f $state/namespaces ]]; then
		while read -r ns; do ip netns delete "$ns" 2>/dev/null || true; done <"$state/namespaces"
		# The kernel frees a namespace, and with it the veth pair, a moment after its last process.
		local deadline=$((SECONDS + 30))
		while ip -br link | grep -q '^dpsw[0-9]' && ((SECONDS < deadline)); do sleep 0.5; done
	fi
	if [[ -f $state/forward-rule ]]; then
		iptables -D FORWARD -i "$bridge" -o "$bridge" -j ACCEPT 2>/dev/null || true
	fi
	[[ -f $state/bridge ]] && ip link delete "$bridge" 2>/dev/null || true
	rm -rf "$state" /run/dp-swarm-[0-9]
	log "removed"
}

# kill N: node N dies as a machine would: its network link goes down and its daemon is killed.
kill_node() {
	local i=$1
	[[ $i =~ ^[2-9]$ && -f $state/node$i/dockerd.pid ]] || die "usage: swarm.sh kill N: N is a worker node of the lab (2 to 9)"
	ip link set "dpsw$i" down
	kill -KILL "$(cat "$state/node$i/dockerd.pid")"
	log "node $i is gone (link down, dockerd killed)"
}

case ${1:-} in
up) up "${2:-3}" ;;
down) down ;;
kill) kill_node "${2:-}" ;;
*) die "usage: swarm.sh up [N] | swarm.sh kill N | swarm.sh down" ;;
esac
