#!/bin/sh
# The dependencies of a Node project, installed in the image's build with the package manager its
# lock file is for (the Dockerfile runs it in /build/app, where the package files are):
#   docker/node-install.sh production [DEST]   without the development dependencies (what the image
#                                              runs); DEST: every node_modules then moves there
#   docker/node-install.sh all                 with them (for the app's build script)
#
#   package-lock.json, npm-shrinkwrap.json   npm ci
#   pnpm-lock.yaml                           pnpm install --frozen-lockfile
#   yarn.lock of Yarn 1                      yarn install --frozen-lockfile
#   yarn.lock of Yarn 4+                     yarn install --immutable (production: yarn workspaces focus)
#   no lock file                             npm install: resolved now (a warning says so)
# pnpm and Yarn come from the npm registry, at the version package.json's "packageManager" names,
# else at the latest of the major version whose lock file format this is. Caches go under
# /root/.npm (a BuildKit cache mount).
set -eu

die() {
	echo "error: $*" >&2
	exit 1
}

# packaged_version NAME: the version package.json's "packageManager" gives NAME (e.g. pnpm@9.1.0+sha512...).
packaged_version() {
	node -e 'const [name, spec] = String(require("./package.json").packageManager || "").split("@");
		if (name === process.argv[1] && spec) console.log(spec.split("+")[0]);' "$1"
}

# tool NAME PACKAGE VERSION: NAME on PATH, installed from the npm registry as PACKAGE@VERSION, in a
# directory of its own (the official image has a Yarn 1 in /usr/local/bin, which this must not clobber).
tool() {
	npm install --global --prefix /opt/node-install --no-audit --no-fund --loglevel=error "$2@$3" >/dev/null
	PATH=/opt/node-install/bin:$PATH
	echo "node-install: $1 $("$1" --version) ($2@$3)"
}

with_npm() {
	if [ "$scope" = production ]; then npm ci --omit=dev --no-audit --no-fund; else npm ci --include=dev --no-audit --no-fund; fi
}

with_pnpm() {
	version=$(packaged_version pnpm)
	if [ -z "$version" ]; then
		# No version named: the lock file's format says which major version wrote it.
		format=$(sed -n "s/^lockfileVersion: *'\{0,1\}\([0-9]*\).*/\1/p" pnpm-lock.yaml)
		case $format in
		9) version=10 ;;
		6) version=8 ;;
		5) version=7 ;;
		*) die "pnpm-lock.yaml has a lockfileVersion this image does not know ('$format'): name the pnpm version in package.json (\"packageManager\": \"pnpm@X.Y.Z\")" ;;
		esac
	fi
	tool pnpm pnpm "$version"
	set -- --frozen-lockfile --store-dir /root/.npm/pnpm-store --config.confirmModulesPurge=false
	# Under NODE_ENV=production (the image's) some pnpm versions leave the development dependencies out.
	if [ "$scope" = production ]; then pnpm install "$@" --prod; else NODE_ENV=development pnpm install "$@"; fi
}

with_yarn() {
	version=$(packaged_version yarn)
	if grep -q '^# yarn lockfile v1' yarn.lock; then
		case $version in 1.*) ;; *) version=1 ;; esac
		tool yarn yarn "$version"
		# The image's two installs (production, and all for a build script) run side by side on the
		# one cache, which Yarn 1 corrupts unless its runs take turns.
		set -- --frozen-lockfile --non-interactive --cache-folder /root/.npm/yarn --mutex file:/root/.npm/.yarn-mutex
		if [ "$scope" = production ]; then yarn install "$@" --production; else yarn install "$@" --production=false; fi
		return
	fi
	# Yarn 2+ ("Berry"): the image runs node_modules, which Plug'n'Play (its default) does not make.
	grep -Eq '^nodeLinker: *"?(node-modules|pnpm)"?' .yarnrc.yml 2>/dev/null ||
		die "yarn.lock is Yarn 2+'s, whose Plug'n'Play keeps no node_modules for this image to run: add 'nodeLinker: node-modules' to .yarnrc.yml"
	case ${version:-4} in
	[0-3] | [0-3].*) die "yarn.lock is Yarn ${version}'s: this image installs with Yarn 1 or 4+ (yarn set version stable)" ;;
	esac
	# The project's own copy of Yarn (yarnPath) is not in the build: the registry's, same version.
	export YARN_IGNORE_PATH=1 YARN_ENABLE_TELEMETRY=0 YARN_ENABLE_GLOBAL_CACHE=1 YARN_GLOBAL_FOLDER=/root/.npm/yarn-berry
	tool yarn @yarnpkg/cli-dist "${version:-4}"
	if [ "$scope" = production ]; then yarn workspaces focus --all --production; else yarn install --immutable; fi
}

scope=${1:-} dest=${2:-}
case $scope:$# in
production:[12] | all:1) ;;
*) die "usage: node-install.sh production [DEST] | all" ;;
esac
[ -f package.json ] || die "no package.json in $(pwd)"

if [ -f package-lock.json ] || [ -f npm-shrinkwrap.json ]; then
	with_npm
elif [ -f pnpm-lock.yaml ]; then
	with_pnpm
elif [ -f yarn.lock ]; then
	with_yarn
else
	echo "warning: no lock file (package-lock.json, pnpm-lock.yaml, yarn.lock): dependencies are resolved at build time (npm install --package-lock-only makes one)" >&2
	if [ "$scope" = production ]; then npm install --omit=dev --no-audit --no-fund; else npm install --include=dev --no-audit --no-fund; fi
fi
# An app without dependencies gets no node_modules from the package managers: the runtime stage
# copies the directory whatever it holds.
mkdir -p node_modules
# DEST: the root's node_modules and each workspace's (a monorepo's packages keep theirs where
# versions differ; pnpm's link into the root's), laid out as in the project: what the runtime copies.
if [ -n "$dest" ]; then
	find . -name node_modules -prune -type d | while IFS= read -r modules; do
		mkdir -p "$dest/${modules%/node_modules}"
		mv "$modules" "$dest/$modules"
	done
fi
