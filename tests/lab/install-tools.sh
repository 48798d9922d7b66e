#!/usr/bin/env bash
# Installs what the fast tier needs on a fresh Debian 12 machine, idempotently: the Python test
# dependencies, the static checkers, and the Docker CLI plugins compose v2 and buildx.
# Debian 12 packages neither plugin; Debian 13's packages hold static Go binaries that run on 12,
# so they are fetched with apt from a trixie-only sources list kept apart from the system's.
set -Eeuo pipefail

here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
root=$(cd -- "$here/../.." && pwd)
plugins_dir=${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins
apt_state=${APT_STATE_DIR:-/var/cache/deployment-patterns-apt}

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

# install_trixie_plugin PACKAGE BINARY: a CLI plugin out of Debian 13's package.
install_trixie_plugin() {
	local package=$1 binary=$2 work deb
	[[ -x "$plugins_dir/$binary" ]] && return 0
	log "installing $binary from Debian trixie's $package"
	mkdir -p "$apt_state/lists/partial" "$apt_state/archives/partial" "$plugins_dir"
	echo "deb http://deb.debian.org/debian trixie main" >"$apt_state/trixie.list"
	local opts=(-o "Dir::Etc::SourceList=$apt_state/trixie.list" -o "Dir::Etc::SourceParts=-"
		-o "Dir::State::Lists=$apt_state/lists" -o "Dir::Cache::Archives=$apt_state/archives"
		-o "APT::Get::List-Cleanup=0")
	if [[ ! -f "$apt_state/lists/.updated" ]]; then
		apt-get "${opts[@]}" update -qq
		touch "$apt_state/lists/.updated"
	fi
	work=$(mktemp -d)
	(cd "$work" && apt-get "${opts[@]}" download "$package" >/dev/null)
	deb=$(ls "$work"/*.deb)
	dpkg -x "$deb" "$work/x"
	install -m 0755 "$work/x/usr/libexec/docker/cli-plugins/$binary" "$plugins_dir/$binary"
	rm -rf "$work"
}

apt_install ca-certificates git openssl gnupg restic prometheus prometheus-alertmanager prometheus-blackbox-exporter systemd util-linux docker-registry socat iproute2 iptables
install_trixie_plugin docker-compose docker-compose
install_trixie_plugin docker-buildx docker-buildx
command -v docker >/dev/null 2>&1 || apt_install docker.io

# The Kubernetes checks: kubectl (kustomize) comes with the machine or the user; the custom
# resources' schemas from npm (tests/k8s/package-lock.json).
command -v kubectl >/dev/null 2>&1 ||
	log "warning: kubectl is not installed: the Kubernetes checks will fail (https://kubernetes.io/docs/tasks/tools/)"
if [[ ! -d "$root/tests/k8s/node_modules/@kubernetes-models/prometheus-operator" ]]; then
	command -v npm >/dev/null 2>&1 || apt_install nodejs npm
	log "npm ci (tests/k8s)"
	npm ci --prefix "$root/tests/k8s" --no-audit --no-fund --loglevel=error >/dev/null
fi

# checkov in a virtualenv of its own: it pins many packages the other tools share.
checkov_venv=$root/tests/lab/.state/checkov
if [[ ! -x "$checkov_venv/bin/checkov" ]]; then
	log "installing checkov (tests/lab/.state/checkov)"
	python3 -m venv "$checkov_venv"
	"$checkov_venv/bin/pip" install -q --disable-pip-version-check "checkov>=3.3,<3.4" >"$checkov_venv.log" 2>&1 ||
		{ cat "$checkov_venv.log" >&2; exit 1; }
fi

log "pip install -r requirements-dev.txt"
python3 -m pip install -q --disable-pip-version-check -r "$root/requirements-dev.txt"
log "ready: $(docker compose version 2>/dev/null | head -n1)"
