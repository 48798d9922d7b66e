# shellcheck shell=sh
# The build's credentials, for the steps that fetch dependencies: sourced there (". build-env.sh"),
# it exports each NAME=VALUE line of the BuildKit secret build_env (BUILD_ENV_FILE on the build
# host; none: nothing), e.g.
#   NPM_TOKEN=...                                            for an .npmrc's ${NPM_TOKEN}
#   PIP_INDEX_URL=https://USER:TOKEN@pypi.example.com/simple/  (uv: UV_INDEX_URL; Poetry: POETRY_HTTP_BASIC_*)
#   GOPROXY=https://USER:TOKEN@goproxy.example.com and GONOSUMDB=example.com/*   (Go)
# Neither a secret mount nor a step's environment is kept in a layer. Blank lines and # comments are
# skipped; "export " before a name and quotes around a whole value are taken as a .env file has
# them. A line that is not NAME=VALUE stops the build, naming the line, never its content.
# BUILD_ENV_SECRET: the file to read [/run/secrets/build_env] (scripts check BUILD_ENV_FILE with it).
build_env_secret=${BUILD_ENV_SECRET:-/run/secrets/build_env}
if [ -s "$build_env_secret" ]; then
	build_env_number=0
	while IFS= read -r build_env_line || [ -n "$build_env_line" ]; do
		build_env_number=$((build_env_number + 1))
		build_env_line=${build_env_line%"$(printf '\r')"}
		build_env_line=${build_env_line#"${build_env_line%%[![:space:]]*}"}
		case $build_env_line in '' | '#'*) continue ;; esac
		build_env_line=${build_env_line#export }
		build_env_name=${build_env_line%%=*}
		build_env_value=${build_env_line#*=}
		if [ "$build_env_name" = "$build_env_line" ]; then
			echo "error: line $build_env_number of the build's credentials has no '=': NAME=VALUE" >&2
			exit 1
		fi
		case $build_env_name in
		'' | [0-9]* | *[!A-Za-z0-9_]*)
			echo "error: line $build_env_number of the build's credentials is not NAME=VALUE (NAME: letters, digits and _)" >&2
			exit 1
			;;
		esac
		case $build_env_value in
		\"*\" | \'*\') build_env_value=${build_env_value#?} build_env_value=${build_env_value%?} ;;
		esac
		export "$build_env_name=$build_env_value"
	done <"$build_env_secret"
	unset build_env_number build_env_line build_env_name build_env_value
fi
unset build_env_secret
