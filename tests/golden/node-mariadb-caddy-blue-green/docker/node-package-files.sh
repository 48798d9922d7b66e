#!/bin/sh
# The files a Node project's dependencies are installed from, laid out as in the project, apart
# from the rest of the source (the Dockerfile's package-files stage): the layers that install
# dependencies are then rebuilt only when these change.
#   docker/node-package-files.sh SRC DEST
# The root's package.json, lock file and package managers' settings (.npmrc, .yarnrc.yml,
# pnpm-workspace.yaml, .pnpmfile.cjs, patches), and every other package.json outside node_modules
# and hidden directories: a monorepo's workspaces (npm's and Yarn's "workspaces", pnpm's
# pnpm-workspace.yaml), which the package managers install from the root, each with its own.
set -eu

[ $# -eq 2 ] || {
	echo "error: usage: node-package-files.sh SRC DEST" >&2
	exit 1
}
src=$1 dest=$2
mkdir -p "$dest"
cd "$src"
for file in package.json package-lock.json npm-shrinkwrap.json pnpm-lock.yaml pnpm-workspace.yaml yarn.lock \
	.npmrc .yarnrc.yml .pnpmfile.cjs; do
	if [ -f "$file" ]; then cp "$file" "$dest/"; fi
done
for dir in patches .yarn/patches .yarn/plugins; do
	if [ -d "$dir" ]; then cp -R --parents "$dir" "$dest/"; fi
done
find . \( -name node_modules -o -name '.?*' \) -prune -o -name package.json ! -path ./package.json -print |
	while IFS= read -r file; do cp --parents "$file" "$dest/"; done
