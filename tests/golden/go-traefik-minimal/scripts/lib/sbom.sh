# shellcheck shell=bash
# What scripts/sbom.sh lists for a Go app: the standard library and the modules compiled into the
# binary (its embedded build information, read by `go version -m` in the pinned Go image).
# Sourced, never run.

# installed_packages IMAGE: "golang MODULE VERSION" per line (tab-separated); stdlib first.
installed_packages() {
	local container binary status=0
	binary=$(mktemp -d)
	container=$(docker create "$1") || return 1
	docker cp --quiet "$container:/app/server" "$binary/server" || status=1
	docker rm "$container" >/dev/null
	if [[ $status -eq 0 ]]; then
		docker run --rm --network none --read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges:true \
			--user 65534:65534 --env HOME=/tmp --volume "$binary/server:/server:ro" --entrypoint go \
			"${GO_IMAGE:-${IMAGE_MIRROR:-docker.io}/library/golang:1.27-bookworm}" version -m /server |
			awk -F '\t' '
				NR == 1 { sub(/^.*: go/, ""); print "golang\tstdlib\tv" $0 }  # the standard library of that Go
				$2 == "dep" { if (held) print held; held = "golang\t" $3 "\t" $4 }
				$2 == "=>" { held = "golang\t" $3 "\t" $4 }  # a replaced module: what was compiled in
				END { if (held) print held }' || status=1
	fi
	rm -rf "$binary"
	return "$status"
}
