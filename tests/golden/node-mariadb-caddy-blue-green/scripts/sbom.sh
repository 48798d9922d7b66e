#!/usr/bin/env bash
# A CycloneDX 1.5 SBOM (JSON, on standard output) of the app image's dependencies, as installed in
# the image: node_modules (scripts/lib/sbom.sh). Works on a host
# without a registry: the image must be here (scripts/build.sh makes it).
#   scripts/sbom.sh [VERSION] > sbom.cdx.json      VERSION defaults to dev
# Settings: APP_IMAGE [golden-node] (the repository of the image).
set -Eeuo pipefail
# shellcheck source=lib/common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/common.sh"
# shellcheck source=lib/sbom.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/sbom.sh"

# cyclonedx NAME VERSION: the document, from "TYPE NAME VERSION" lines (tab-separated) on input.
cyclonedx() {
	awk -F '\t' -v app="$1" -v version="$2" -v serial="$(cat /proc/sys/kernel/random/uuid)" \
		-v timestamp="$(date -u +%Y-%m-%dT%H:%M:%SZ)" '
		function quote(s) { gsub(/\\/, "\\\\", s); gsub(/"/, "\\\"", s); return "\"" s "\"" }
		function purl(type, name, version) {
			if (type == "npm" && substr(name, 1, 1) == "@") name = "%40" substr(name, 2)
			return "pkg:" type "/" name "@" version
		}
		NF == 3 && !seen[$0]++ {
			ref = purl($1, $2, $3)
			components[n++] = "    {\"type\": \"library\", \"bom-ref\": " quote(ref) ", \"name\": " quote($2) \
				", \"version\": " quote($3) ", \"purl\": " quote(ref) "}"
		}
		END {
			print "{"
			print "  \"bomFormat\": \"CycloneDX\", \"specVersion\": \"1.5\", \"version\": 1,"
			print "  \"serialNumber\": \"urn:uuid:" serial "\","
			print "  \"metadata\": {\"timestamp\": \"" timestamp "\", \"component\": {\"type\": \"application\", \"bom-ref\": " \
				quote(app "@" version) ", \"name\": " quote(app) ", \"version\": " quote(version) "}},"
			print "  \"components\": ["
			for (i = 0; i < n; i++) print components[i] (i < n - 1 ? "," : "")
			print "  ]"
			print "}"
		}'
}

[[ $# -le 1 ]] || die "usage: scripts/sbom.sh [VERSION]"
version=${1:-dev}
require_version "$version"
require_cmd docker "install Docker Engine"
image=${APP_IMAGE:-golden-node}:$version
docker image inspect "$image" >/dev/null 2>&1 || die "image $image is not on this host: build it first (scripts/build.sh ENV $version)"
packages=$(installed_packages "$image") || die "cannot list the packages installed in $image"
[[ -n $packages ]] || die "found no package installed in $image"
cyclonedx "$PROJECT_SLUG" "$version" <<<"$packages"
log "$(wc -l <<<"$packages") packages of $image"
