#!/bin/sh
# The package the image's server is built from, printed for `go build` (the Dockerfile's build
# stage runs this in the module root, with the source copied in):
#   GO_MAIN set (a build argument)           that package, as given
#   the module root is a main package        .
#   else one main package under cmd/         that one (e.g. ./cmd/server)
#   else one main package in the module      that one
# Several candidates, or none, stop the build with what was found and how to choose.
set -eu

die() {
	echo "error: $*" >&2
	exit 1
}

if [ -n "${GO_MAIN:-}" ]; then
	echo "$GO_MAIN"
	exit 0
fi

# Every main package of the module as ./DIR (-find: no dependency is resolved or downloaded;
# vendor/ is not part of ./...).
mains=$(go list -e -find -f '{{if eq .Name "main"}}{{.Dir}}{{end}}' ./... | while IFS= read -r dir; do
	[ -n "$dir" ] && echo ".${dir#"$PWD"}"
done)
[ -n "$mains" ] || die "no main package in this Go module: the server's package must be 'package main' with a func main"

# only_one LIST: the list's one line; nothing when it has none or several.
only_one() {
	[ -n "$1" ] && [ "$(printf '%s\n' "$1" | wc -l)" -eq 1 ] && printf '%s\n' "$1"
	return 0
}

if printf '%s\n' "$mains" | grep -qx '\.'; then
	echo .
	exit 0
fi
chosen=$(only_one "$(printf '%s\n' "$mains" | grep '^\./cmd/' || true)")
[ -n "$chosen" ] || chosen=$(only_one "$mains")
[ -n "$chosen" ] || die "several main packages ($(printf '%s\n' "$mains" | tr '\n' ' ' | sed 's/ $//')): set the build argument GO_MAIN to the server's, e.g. ARG GO_MAIN=$(printf '%s\n' "$mains" | head -n 1) in the Dockerfile"
echo "$chosen"
