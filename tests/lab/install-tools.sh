#!/usr/bin/env bash
# Installs what the fast tier needs on a fresh Debian 12 machine, idempotently: the Python test
# dependencies, the static checkers, the Docker CLI plugins compose v2 and buildx, and the lab's
# Docker Engine 26 for the e2e tier. Debian 12 packages neither plugin and Engine 20.10 only;
# Debian 13's packages hold Go binaries that run on 12, so they are fetched with apt from a
# trixie-only sources list kept apart from the system's.
set -Eeuo pipefail

here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
root=$(cd -- "$here/../.." && pwd)
plugins_dir=${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins
apt_state=${APT_STATE_DIR:-/var/cache/deployment-patterns-apt}
engine_dir=${DP_LAB_ENGINE_DIR:-$apt_state/engine}

log() { printf 'install-tools: %s\n' "$*" >&2; }

apt_install() {
	local missing=() pkg
	for pkg in "$@"; do
		dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
	done
	[[ ${#missing[@]} -eq 0 ]] && return 0
	log "apt-get install ${missing[*]}"
	if [[ ! -f /var/lib/apt/lists/.deployment-patterns-updated ]]; then
		apt-get update -qq
		touch /var/lib/apt/lists/.deployment-patterns-updated
	fi
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# trixie_unpack PACKAGE DIR: Debian 13's PACKAGE unpacked into DIR (apt with a trixie-only sources
# list and state of its own: the system's sources stay as they are).
trixie_unpack() {
	local package=$1 dir=$2 work
	mkdir -p "$apt_state/lists/partial" "$apt_state/archives/partial"
	echo "deb http://deb.debian.org/debian trixie main" >"$apt_state/trixie.list"
	local opts=(-o "Dir::Etc::SourceList=$apt_state/trixie.list" -o "Dir::Etc::SourceParts=-"
		-o "Dir::State::Lists=$apt_state/lists" -o "Dir::Cache::Archives=$apt_state/archives"
		-o "APT::Get::List-Cleanup=0")
	if [[ ! -f "$apt_state/lists/.updated" ]]; then
		apt-get "${opts[@]}" update -qq
		touch "$apt_state/lists/.updated"
	fi
	work=$(mktemp -d)
	(cd "$work" && apt-get "${opts[@]}" download "$package" >/dev/null 2>&1)
	dpkg -x "$work"/*.deb "$dir"
	rm -rf "$work"
}

# install_trixie_plugin PACKAGE BINARY: a CLI plugin out of Debian 13's package.
install_trixie_plugin() {
	local package=$1 binary=$2 work
	[[ -x "$plugins_dir/$binary" ]] && return 0
	log "installing $binary from Debian trixie's $package"
	work=$(mktemp -d)
	trixie_unpack "$package" "$work"
	mkdir -p "$plugins_dir"
	install -m 0755 "$work/usr/libexec/docker/cli-plugins/$binary" "$plugins_dir/$binary"
	rm -rf "$work"
}

# install_lab_engine: Docker Engine 26 (dockerd, docker-proxy) out of trixie's docker.io, run on
# the installed containerd and runc, with tini as its docker-init. prepare.sh starts it when no
# engine runs: health checks' start interval (compose.engine-25.yaml) needs Engine 25 or later, and
# Debian 12 packages 20.10.
install_lab_engine() {
	[[ -x "$engine_dir/dockerd" && -x "$engine_dir/docker-proxy" ]] && return 0
	log "installing dockerd and docker-proxy from Debian trixie's docker.io into $engine_dir"
	local work
	work=$(mktemp -d)
	trixie_unpack docker.io "$work"
	mkdir -p "$engine_dir"
	install -m 0755 "$work/usr/sbin/dockerd" "$work/usr/sbin/docker-proxy" "$engine_dir/"
	rm -rf "$work"
}

apt_install ca-certificates git openssl gnupg restic prometheus prometheus-alertmanager prometheus-blackbox-exporter systemd util-linux docker-registry socat iproute2 iptables
install_trixie_plugin docker-compose docker-compose
install_trixie_plugin docker-buildx docker-buildx
# Debian 12's client and engine (20.10) where either is missing: the Swarm lab's nodes run its dockerd.
{ command -v docker && command -v dockerd; } >/dev/null 2>&1 || apt_install docker.io
# The lab's Engine 26 runs on the installed containerd and runc, with tini as its docker-init.
{ command -v containerd && command -v runc; } >/dev/null 2>&1 || apt_install containerd runc
apt_install tini
install_lab_engine

# The Kubernetes checks: kubectl (kustomize) comes with the machine or the user; the custom
# resources' schemas from npm (tests/k8s/package-lock.json).
command -v kubectl >/dev/null 2>&1 ||
	log "warning: kubectl is not installed: the Kubernetes checks will fail (https://kubernetes.io/docs/tasks/tools/)"
if [[ ! -d "$root/tests/k8s/node_modules/@kubernetes-models/prometheus-operator" ||
	! -d "$root/tests/k8s/node_modules/@kubernetes-models/cloudnative-pg" ]]; then
	command -v npm >/dev/null 2>&1 || apt_install nodejs npm
	log "npm ci (tests/k8s)"
	npm ci --prefix "$root/tests/k8s" --no-audit --no-fund --loglevel=error >/dev/null
fi

# checkov in a virtualenv of its own (it pins many packages the other tools share), made once per
# machine and pin in DP_TOOLS_CACHE: a fresh clone links it instead of installing it again (about
# a minute of CPU). A half-made one (no checkov in it) is made again.
checkov_pin="checkov~=3.3.0" # any 3.3.x; the directory is named after it, so a new pin makes a new one
checkov_venv=${DP_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/deployment-patterns}/checkov-${checkov_pin#checkov~=}
if [[ ! -x "$checkov_venv/bin/checkov" ]]; then
	log "installing checkov ($checkov_venv)"
	rm -rf "$checkov_venv"
	python3 -m venv "$checkov_venv"
	"$checkov_venv/bin/pip" install -q --disable-pip-version-check "$checkov_pin" >"$checkov_venv.log" 2>&1 ||
		{ cat "$checkov_venv.log" >&2; exit 1; }
fi
checkov_link=$root/tests/lab/.state/checkov
[[ -L $checkov_link || ! -e $checkov_link ]] || rm -rf "$checkov_link" # a checkout's own, from before
mkdir -p "$root/tests/lab/.state"
ln -sfn "$checkov_venv" "$checkov_link"

log "pip install -r requirements-dev.txt"
python3 -m pip install -q --disable-pip-version-check -r "$root/requirements-dev.txt"
log "ready: $(docker compose version 2>/dev/null | head -n1)"
