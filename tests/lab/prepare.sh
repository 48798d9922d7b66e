#!/usr/bin/env bash
# Prepares this machine for the e2e tier, idempotently: the checkers and Docker CLI plugins
# (install-tools.sh), a running Docker engine, and every image the rendered stacks use.
#
# Images: where a container registry is reachable, the official images are pulled. Where none is,
# stand-ins are built from Debian packages (tests/lab/standins/, see its README) and tagged with
# the official names, so that the rendered files run unmodified. Stand-ins are rebuilt only when
# their recipe changes. The outcome is recorded in $DP_LAB_STATE/images.tsv for the test report.
#
# Settings (environment variables):
#   DP_LAB_IMAGES   auto (default: official if a registry answers, else stand-ins) | official | stand-in
#   DP_LAB_STATE    where the record goes (default: tests/lab/.state)
#   DP_LAB_KEYS     which images (keys of extensions/catalogue.py IMAGES); default: all with a stand-in
set -Eeuo pipefail

here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
root=$(cd -- "$here/../.." && pwd)
state=${DP_LAB_STATE:-$here/.state}
mode=${DP_LAB_IMAGES:-auto}
base_image=dp-lab/debian-base:bookworm
# The lab's Docker Engine (26, from Debian trixie), installed by install-tools.sh.
engine_dir=${DP_LAB_ENGINE_DIR:-${APT_STATE_DIR:-/var/cache/deployment-patterns-apt}/engine}
ca_bundle=/etc/ssl/certs/ca-certificates.crt

log() { printf 'prepare: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

ensure_engine() {
	# systemd hosts mount / shared; node exporter's rslave bind of / needs that (this lab may not).
	if [[ $(findmnt -no PROPAGATION / 2>/dev/null) == private ]]; then
		log "making / a shared mount, as systemd does"
		mount --make-rshared /
	fi
	if docker info >/dev/null 2>&1; then
		log "engine already running: Docker $(docker version --format '{{.Server.Version}} (API {{.Server.APIVersion}})')"
		return 0
	fi
	[[ -x $engine_dir/dockerd ]] || die "no lab engine in $engine_dir (run tests/lab/install-tools.sh)"
	log "starting dockerd $("$engine_dir/dockerd" --version | cut -d, -f1 | cut -d' ' -f3)"
	# No systemd on these machines: the daemon runs in its own session and outlives the tests.
	# 8>&-: the daemon must not inherit the lock (it would hold it for its whole life).
	# Small subnets: the e2e tier runs several stacks of up to 9 networks at once, more than the
	# default pools hold (about 30 networks); the rendered README gives users the same advice.
	setsid "$engine_dir/dockerd" --userland-proxy-path "$engine_dir/docker-proxy" --init-path /usr/bin/tini-static \
		--default-address-pool base=10.213.0.0/16,size=24 >/var/log/dockerd.log 2>&1 </dev/null 8>&- &
	for _ in $(seq 60); do
		docker info >/dev/null 2>&1 && return 0
		sleep 1
	done
	die "dockerd did not answer within 60 s (see /var/log/dockerd.log)"
}

# key<TAB>official reference, for every image of extensions/catalogue.py.
image_table() {
	python3 -c 'import sys; sys.path.insert(0, sys.argv[1]); from extensions.catalogue import IMAGES
for key, ref in IMAGES.items(): print(f"{key}\t{ref}")' "$root"
}

registry_reachable() {
	timeout 60 docker pull -q "$1" >/dev/null 2>&1
}

recipe_hash() { # hash of a stand-in's directory plus the base image it builds on
	(cd "$here/standins/$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum
		docker image inspect -f '{{.Id}}' "$base_image") | sha256sum | cut -c1-16
}

label_of() { docker image inspect -f "{{ index .Config.Labels \"$2\" }}" "$1" 2>/dev/null || true; }

ensure_base() {
	local recipe
	recipe=$( (echo "bookworm minbase v1"; sha256sum "$ca_bundle") | sha256sum | cut -c1-16)
	[[ $(label_of "$base_image" dp.lab.recipe) == "$recipe" ]] && return 0
	command -v debootstrap >/dev/null 2>&1 ||
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
	local rootfs
	rootfs=$(mktemp -d /var/tmp/dp-lab-rootfs.XXXXXX)
	log "debootstrap bookworm (minbase) for the stand-in base"
	debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >/dev/null
	# Lab only: trust this machine's CA bundle (an intercepting proxy's CA), also after
	# update-ca-certificates runs in a derived image.
	mkdir -p "$rootfs/usr/local/share/ca-certificates" "$rootfs/etc/ssl/certs"
	cp "$ca_bundle" "$rootfs/etc/ssl/certs/ca-certificates.crt"
	cp "$ca_bundle" "$rootfs/usr/local/share/ca-certificates/dp-lab-host-bundle.crt"
	printf 'APT::Install-Recommends "false";\n' >"$rootfs/etc/apt/apt.conf.d/99-dp-lab"
	rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb
	tar -C "$rootfs" -c . | docker import \
		--change "LABEL dp.lab.recipe=$recipe dp.lab.stand-in=true" \
		--change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 PIP_CERT=$ca_bundle SSL_CERT_FILE=$ca_bundle REQUESTS_CA_BUNDLE=$ca_bundle NODE_EXTRA_CA_CERTS=$ca_bundle" \
		--change 'CMD ["bash"]' - "$base_image" >/dev/null
	rm -rf "$rootfs"
	log "built $base_image"
}

ensure_standin() { # key reference
	local key=$1 ref=$2 recipe
	recipe=$(recipe_hash "$key")
	if [[ $(label_of "$ref" dp.lab.recipe) == "$recipe" ]]; then
		log "stand-in for $ref is current"
		return 0
	fi
	log "building the stand-in for $ref"
	docker build -q --build-arg "BASE=$base_image" --build-arg "STANDS_FOR=$ref" \
		--label "dp.lab.recipe=$recipe" -t "$ref" "$here/standins/$key" >/dev/null ||
		die "the stand-in for $ref did not build"
}

main() {
	# One preparation at a time: parallel test workers each call this, the first does the work.
	exec 8>"/tmp/dp-lab-prepare.lock"
	flock 8
	bash "$here/install-tools.sh"
	ensure_engine
	mkdir -p "$state"
	local keys=${DP_LAB_KEYS:-}
	local record="$state/images.tsv.tmp"
	printf 'image\tsource\tprovides\n' >"$record"

	local first_ref
	first_ref=$(image_table | awk -F'\t' 'NR == 1 { print $2 }')
	if [[ $mode == auto ]]; then
		if registry_reachable "$first_ref"; then
			mode=official
			log "a registry answered: using the official images"
		else
			mode=stand-in
			log "no registry answered: building stand-ins from Debian packages"
		fi
	fi
	[[ $mode == stand-in ]] && ensure_base

	local key ref
	while IFS=$'\t' read -r key ref; do
		[[ -z $keys || " $keys " == *" $key "* ]] || continue
		if [[ $mode == official ]]; then
			docker pull -q "$ref" >/dev/null || die "could not pull $ref"
			printf '%s\tofficial\t-\n' "$ref" >>"$record"
		elif [[ -d "$here/standins/$key" ]]; then
			ensure_standin "$key" "$ref"
			printf '%s\tSTAND-IN\t%s\n' "$ref" "$(label_of "$ref" dp.lab.provides)" >>"$record"
		else
			printf '%s\tnone\tno stand-in: static validation only\n' "$ref" >>"$record"
		fi
	done < <(image_table)
	mv -f "$record" "$state/images.tsv"
	log "images ready ($mode); record in ${state#"$root"/}/images.tsv"
}

main "$@"
