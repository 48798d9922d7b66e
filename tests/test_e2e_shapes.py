"""Existing applications, not the example apps: small apps of the shapes real projects have
(tests/fixtures/apps/), each with its own port, health path and start command and no metrics,
rendered with example_app=false, built by the rendered Dockerfile and served through the proxy.

Not tested here, and why: Poetry without a lock file (Poetry resolves through PyPI's JSON API,
which this lab's PyPI mirror does not serve); Go modules from a module proxy (none is reachable
here: the vendored shape builds without one)."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from conftest import HEALTH_ANSWERS, run
from e2e_support import Stack, deploy_release, docker
from extensions.catalogue import IMAGES
from extensions.model import app_healthcheck

pytestmark = pytest.mark.e2e

FIXTURES = Path(__file__).parent / "fixtures" / "apps"
COMMON = dict(example_app=False, environments=["dev"], database="none", cache="none", monitoring="none",
              process_manager="none", health_path="/health")
SHAPES = {
    # Pins without hashes, and a wheel kept in the project (--find-links ./wheels) whose module the app imports.
    "python-requirements-without-hashes": dict(runtime="python", python_installer="pip", app_port=5000,
                                               start_command="gunicorn --bind 0.0.0.0:5000 app:app"),
    "python-pyproject-without-lock": dict(runtime="python", python_installer="uv", app_port=5001,
                                          start_command="gunicorn --bind 0.0.0.0:5001 app:app"),
    # A package (src layout, a console script, uv.lock): importable only once installed.
    "python-src-package": dict(runtime="python", python_installer="uv", app_port=5002, start_command="shape-serve"),
    # requirements.txt naming other files (-r) and the project itself (-e .): a src package.
    "python-requirements-nested": dict(runtime="python", python_installer="pip", app_port=5004,
                                       start_command="shape-nested-serve"),
    # Poetry's package mode (src layout, a console script, poetry.lock); its health path answers 204.
    "python-poetry-package": dict(runtime="python", python_installer="poetry", app_port=5003,
                                  start_command="shape-poetry-serve"),
    # Pipenv: Pipfile.lock with a development package ([dev-packages]) the image leaves out.
    "python-pipenv": dict(runtime="python", python_installer="pipenv", app_port=5005,
                          start_command="gunicorn --bind 0.0.0.0:5005 app:app"),
    "node-without-lock": dict(runtime="node", app_port=4000, start_command="node server.js"),
    # Other package managers' locks, each with a development dependency the image leaves out:
    # pnpm and Yarn 1 (at the major version of their lock's format), Yarn 4 (packageManager names it; the
    # node-modules linker); their build scripts need their development dependency. pnpm's has an
    # .npmrc (node-linker=hoisted, a registry token) and a .env, which the image must not hold.
    # Both Yarns' are workspace roots: the app uses packages/greet, which has its own version of a
    # dependency (in packages/greet/node_modules).
    "node-pnpm": dict(runtime="node", app_port=4200, start_command="node server.js"),
    "node-yarn-classic": dict(runtime="node", app_port=4300, start_command="node server.js"),
    "node-yarn-berry": dict(runtime="node", app_port=4400, start_command="node server.js"),
    # A monorepo (npm workspaces): the service in apps/api uses packages/greet, whose own version of
    # a dependency npm keeps in packages/greet/node_modules.
    "node-npm-workspaces": dict(runtime="node", app_port=4600, start_command="node apps/api/server.js"),
    # The same with pnpm (pnpm-workspace.yaml, workspace:* links): each workspace's node_modules
    # links into the root's.
    "node-pnpm-workspaces": dict(runtime="node", app_port=4700, start_command="node apps/api/server.js"),
    # TypeScript: `npm run build` (tsc, a development dependency) makes dist/, which the image runs.
    "node-typescript-build": dict(runtime="node", app_port=4100, start_command="node dist/server.js"),
    "go-vendored": dict(runtime="go", app_port=7000, start_command="/app/server"),
    # The server in cmd/NAME (nothing at the root), a tool's main package beside it, no go.sum.
    "go-cmd-layout": dict(runtime="go", app_port=7100, start_command="/app/server"),
}


# What each shape's app answers at / as "shape".
SERVES = {"python-requirements-without-hashes": "python", "python-pyproject-without-lock": "python",
          "python-src-package": "python-package", "python-poetry-package": "python-poetry-package",
          "python-requirements-nested": "python-requirements-nested", "python-pipenv": "python-pipenv",
          "node-without-lock": "node", "node-pnpm": "node-pnpm", "node-yarn-classic": "node-yarn-classic",
          "node-yarn-berry": "node-yarn-berry", "node-typescript-build": "node-typescript", "node-npm-workspaces": "node-npm-workspaces",
          "node-pnpm-workspaces": "node-pnpm-workspaces",
          "go-vendored": "go-vendored",
          "go-cmd-layout": "go-cmd-layout"}

# Node shapes installed by another package manager than npm: the file each leaves in node_modules.
INSTALLED_BY = {"node-pnpm": ".pnpm", "node-yarn-classic": ".yarn-integrity", "node-yarn-berry": ".yarn-state.yml"}

# Monorepos: the version of ms each workspace loads (the service's own and packages/greet's).
WORKSPACE_MS = {"node-npm-workspaces": {"api": "2.0.0", "greet": "2.1.3"},
                "node-pnpm-workspaces": {"api": "2.0.0", "greet": "2.1.3"},
                "node-yarn-classic": {"app": "2.1.3", "greet": "2.0.0"},
                "node-yarn-berry": {"app": "2.1.3", "greet": "2.0.0"}}

# Shapes whose health path answers 204 No Content (healthy: the image's check takes 200 or 204).
HEALTH_NO_CONTENT = {"python-poetry-package"}


def uncached(pyproject: Path) -> None:
    """A comment of its own, so that the steps after its copy run (and print) in this build, not
    come from the build cache of an earlier run."""
    pyproject.write_text(pyproject.read_text() + f"# build {uuid.uuid4()}\n")


def build_said(proc, text: str) -> bool:
    """A step of the build printed a line starting with `text` (BuildKit's plain output: "#12 0.57
    TEXT"), not merely its command quoting it (a step from the cache prints nothing: see uncached)."""
    return re.search(rf"^#\d+ \d+\.\d+ {re.escape(text)}", proc.stdout + proc.stderr, re.MULTILINE) is not None


def rendered(copie_session, shape: str, answers: dict, alone: bool = False) -> Stack:
    """The shape's app in a project rendered with these answers. alone: a project (and image name)
    other than the shape's own test's, which may run at the same time on another worker."""
    name = f"Shape {shape} alone" if alone else f"Shape {shape}"
    result = copie_session.copy(extra_answers={**COMMON, **answers, "project_name": name})
    assert result.exit_code == 0, result.exception
    shutil.copytree(FIXTURES / shape, result.project_dir, dirs_exist_ok=True)
    stack = Stack(result.project_dir, "dev")
    stack.configure()
    return stack


@pytest.mark.parametrize("shape", SHAPES)
def test_an_existing_app_of_this_shape_builds_and_serves(copie_session, lab, shape):
    stack = rendered(copie_session, shape, SHAPES[shape])
    try:
        stack.up()
        if shape in HEALTH_NO_CONTENT:
            assert stack.http("GET", "/health")[0] == 204
        else:
            assert stack.get_json("/health")["path"] == "/health"
        assert stack.get_json("/")["shape"] == SERVES[shape]
        status, _, _ = stack.http("GET", "/metrics")
        assert status == 404, "the proxy hides /metrics whatever the app serves"
        if shape in INSTALLED_BY:
            modules = docker("run", "--rm", "--entrypoint", "ls", f"{stack.answers['image_name']}:dev",
                             "-A", "/app/node_modules").stdout.split()
            assert INSTALLED_BY[shape] in modules and "ms" in modules, modules
            assert "left-pad" not in modules, "development dependencies stay out of the image"
        if shape in WORKSPACE_MS:
            # Each workspace's dependencies, at its own version; no development dependency anywhere.
            assert stack.get_json("/")["ms"] == WORKSPACE_MS[shape]
            found = docker("run", "--rm", "--entrypoint", "sh", f"{stack.answers['image_name']}:dev", "-c",
                           "find /app -name 'left-pad*'; ls -A /app/packages/greet/node_modules").stdout.split()
            assert "ms" in found and not [name for name in found if name.startswith("left-pad")], found
        if shape == "python-pipenv":
            # The lock's version, and none of [dev-packages].
            assert stack.get_json("/")["humanize"] == "4.11.0"
            dev = docker("run", "--rm", "--entrypoint", "python", f"{stack.answers['image_name']}:dev", "-c",
                         "import importlib.util as u; print(u.find_spec('iniconfig') is None)").stdout.strip()
            assert dev == "True", "development packages stay out of the image"
        if shape == "node-pnpm":
            # Its .npmrc was honoured (node-linker=hoisted: a directory, not pnpm's usual link), and
            # neither it (a registry token) nor its .env (a dotenv file) is in the image.
            checks = docker("run", "--rm", "--entrypoint", "sh", f"{stack.answers['image_name']}:dev", "-c",
                            "test -d node_modules/ms && ! test -L node_modules/ms && echo hoisted; ls -A /app").stdout.split()
            assert checks[0] == "hoisted", checks
            assert ".npmrc" not in checks and ".env" not in checks and "server.js" in checks, checks
    finally:
        stack.down()
        docker("image", "rm", "--force", f"{stack.answers['image_name']}:dev", check=False)
    assert stack.leftovers() == {"containers": [], "volumes": [], "networks": []}


def test_a_node_app_with_a_build_script_runs_its_output_without_development_dependencies(copie_session, lab):
    stack = rendered(copie_session, "node-typescript-build", SHAPES["node-typescript-build"], alone=True)
    image = f"{stack.answers['image_name']}:dev"
    try:
        stack.compose("build", "app-blue")
        listing = docker("run", "--rm", "--entrypoint", "sh", image, "-c",
                         "ls /app/node_modules; ls /app/dist").stdout.split()
        assert "ms" in listing and "server.js" in listing, listing
        assert "typescript" not in listing, "the build's development dependencies stay in the build stage"
        # A build that fails (a type error) fails the image's build, with the compiler's message.
        source = stack.project / "src" / "server.ts"
        source.write_text(source.read_text().replace("const port: number = Number(", "const port: string = Number("))
        proc = stack.compose("build", "app-blue", check=False)
        assert proc.returncode != 0
        assert "error TS2322" in proc.stdout + proc.stderr
    finally:
        docker("image", "rm", "--force", image, check=False)
        run("rm", "-rf", stack.project)


# The stage each runtime's dependencies are fetched in (where BUILD_PACKAGES must be).
FETCH_STAGE = {"python-requirements-without-hashes": "build", "node-without-lock": "base", "go-vendored": "build"}


@pytest.mark.parametrize("shape", FETCH_STAGE)
def test_system_packages_reach_only_their_stages_and_cost_no_step_when_unset(copie_session, lab, shape):
    """The Dockerfile's BUILD_PACKAGES are in the stage that fetches dependencies and not in the
    runtime, its RUNTIME_PACKAGES in the runtime (Go's runtime has none: scratch); both empty (the
    default), the stages that install them are not in the build at all."""
    stack = rendered(copie_session, shape, SHAPES[shape], alone=True)
    image = f"{stack.answers['image_name']}:dev"
    stage_image = f"{stack.answers['image_name']}-{FETCH_STAGE[shape]}:dev"
    dockerfile = stack.project / "Dockerfile"
    try:
        proc = stack.compose("build", "app-blue")
        assert "system-packages" not in proc.stdout + proc.stderr and "apt-get" not in proc.stdout + proc.stderr
        text = dockerfile.read_text()
        assert 'ARG BUILD_PACKAGES=""\n' in text and ('ARG RUNTIME_PACKAGES=""\n' in text) == (not shape.startswith("go-"))
        dockerfile.write_text(text.replace('ARG BUILD_PACKAGES=""', 'ARG BUILD_PACKAGES="jq"')
                              .replace('ARG RUNTIME_PACKAGES=""', 'ARG RUNTIME_PACKAGES="libjq1"'))
        proc = stack.compose("build", "app-blue")
        output = proc.stdout + proc.stderr
        assert "build-system-packages 1/1] RUN apt-get" in output, "the build takes the stage that installs them"
        assert ("runtime-system-packages 1/1] RUN apt-get" in output) == (not shape.startswith("go-"))
        docker("build", "--quiet", "--target", FETCH_STAGE[shape], "--tag", stage_image, str(stack.project))
        assert docker("run", "--rm", "--entrypoint", "jq", stage_image, "-n", "1+1").stdout.strip() == "2"
        if not shape.startswith("go-"):
            found = docker("run", "--rm", "--entrypoint", "sh", image, "-c",
                           "dpkg-query -W -f='${Status}' libjq1; command -v jq || echo ' no jq'").stdout
            assert found == "install ok installed no jq\n", found
        else:
            assert not docker("run", "--rm", "--entrypoint", "/bin/sh", image, "-c", "command -v jq", check=False).stdout
    finally:
        docker("image", "rm", "--force", image, stage_image, check=False)
        run("rm", "-rf", stack.project)


def test_a_yarn_plug_n_play_app_is_refused_with_what_to_do(copie_session, lab):
    """Yarn 2+'s default (Plug'n'Play) makes no node_modules, which the image runs."""
    stack = rendered(copie_session, "node-yarn-berry", SHAPES["node-yarn-berry"], alone=True)
    (stack.project / ".yarnrc.yml").unlink()
    proc = stack.compose("build", "app-blue", check=False)
    assert proc.returncode != 0
    assert build_said(proc, "error: yarn.lock is Yarn 2+'s, whose Plug'n'Play keeps no node_modules for this image "
                            "to run: add 'nodeLinker: node-modules' to .yarnrc.yml")
    run("rm", "-rf", stack.project)


def test_a_python_package_without_a_lock_is_installed_with_its_dependencies_resolved(copie_session, lab):
    stack = rendered(copie_session, "python-src-package", SHAPES["python-src-package"], alone=True)
    (stack.project / "uv.lock").unlink()
    uncached(stack.project / "pyproject.toml")
    image = f"{stack.answers['image_name']}:dev"
    try:
        proc = stack.compose("build", "app-blue")
        assert build_said(proc, "warning: no uv.lock")
        # Installed, not editable: importable from anywhere, its console script on PATH.
        check = docker("run", "--rm", "--workdir", "/tmp", "--entrypoint", "sh", image, "-c",
                       "command -v shape-serve && python -c 'import shape_package.serve as s; print(s.__file__)'")
        script, module = check.stdout.split()
        assert script == "/opt/venv/bin/shape-serve"
        assert re.fullmatch(r"/opt/venv/lib/python3\.\d+/site-packages/shape_package/serve\.py", module), module
    finally:
        docker("image", "rm", "--force", image, check=False)
        run("rm", "-rf", stack.project)


STATUS_SERVER = Path(__file__).parent / "status_server.py"
# The image each runtime's health check runs in: Go's runs in the static busybox its image copies in.
CHECK_IMAGES = {"python": IMAGES["python"], "node": IMAGES["node"], "go": IMAGES["busybox"]}


@pytest.fixture(scope="module")
def status_servers(lab):
    """tests/status_server.py in two containers on a network of this module's own: one listening on
    all addresses, one on 127.0.0.1 only (an app's usual mistake). -> {"all": name, "loopback": name}"""
    network = f"health-{uuid.uuid4().hex[:8]}"
    docker("network", "create", "--internal", network)
    names = {"all": f"{network}-all", "loopback": f"{network}-loopback"}
    try:
        for kind, address in (("all", "0.0.0.0"), ("loopback", "127.0.0.1")):
            docker("run", "--detach", "--name", names[kind], "--network", network,
                   "--volume", f"{STATUS_SERVER}:/status_server.py:ro", IMAGES["python"],
                   "python", "/status_server.py", address, "8080")
        yield names
    finally:
        docker("rm", "--force", *names.values(), check=False)
        docker("network", "rm", network, check=False)


@pytest.mark.parametrize("runtime", CHECK_IMAGES)
def test_the_images_health_check_asks_where_the_proxy_reaches_the_app(status_servers, runtime):
    """The check of each runtime's image, run as Docker runs it: in a container of that runtime's
    image sharing the app's network namespace (its /etc/hosts and hostname). 200 and 204 pass;
    an app that answers on localhost only fails, saying so."""
    checkers = []

    def checker(server: str) -> str:
        name = f"{server}-{runtime}"
        docker("run", "--detach", "--name", name, "--network", f"container:{server}", "--entrypoint", "sleep",
               CHECK_IMAGES[runtime], "300")
        checkers.append(name)
        return name

    def check(container: str, path: str, port: int = 8080):
        return docker("exec", container, *app_healthcheck(runtime, port, path)[1:], check=False, timeout=30)

    try:
        on_all, on_loopback = checker(status_servers["all"]), checker(status_servers["loopback"])
        deadline = time.monotonic() + 20
        while check(on_all, "/s/200").returncode != 0:
            assert time.monotonic() < deadline, "the status server did not start"
            time.sleep(0.2)
        answers = {path: check(on_all, path).returncode == 0 for path in HEALTH_ANSWERS}
        assert answers == HEALTH_ANSWERS
        # Asked at its own address, with the Host header it had when the check asked 127.0.0.1.
        allowed = check(on_all, "/allowed-host")
        assert allowed.returncode == 0, allowed.stderr
        assert re.match(r"/s/503 answered (HTTP/1\.0 )?503", check(on_all, "/s/503").stderr), "says what the app answered"
        refused = check(on_all, "/s/200", port=8081)
        assert refused.returncode != 0 and "no answer at " in refused.stderr, refused.stderr
        # Listening on 127.0.0.1 only: healthy to a check on localhost, unreachable to the proxy.
        while (loopback := check(on_loopback, "/s/200")).returncode != 0 and "answers on localhost" not in loopback.stderr:
            assert time.monotonic() < deadline, loopback.stderr
            time.sleep(0.2)
        assert loopback.returncode != 0
        assert loopback.stderr.strip().startswith("the app answers on localhost only, not on 1"), loopback.stderr
        assert "make it listen on all addresses" in loopback.stderr
    finally:
        docker("rm", "--force", *checkers, check=False)


def test_a_poetry_package_is_installed_and_a_poetry_app_without_one_still_builds(copie_session, lab):
    stack = rendered(copie_session, "python-poetry-package", SHAPES["python-poetry-package"], alone=True)
    image = f"{stack.answers['image_name']}:dev"
    try:
        stack.compose("build", "app-blue")
        # Installed from its wheel, not editable: importable from anywhere, its console script on PATH.
        check = docker("run", "--rm", "--workdir", "/tmp", "--entrypoint", "sh", image, "-c",
                       "command -v shape-poetry-serve && python -c 'import shape_poetry.serve as s; print(s.__file__)'")
        script, module = check.stdout.split()
        assert script == "/opt/venv/bin/shape-poetry-serve"
        assert re.fullmatch(r"/opt/venv/lib/python3\.\d+/site-packages/shape_poetry/serve\.py", module), module
        # Package mode without a package Poetry can find (the name matches no directory): where
        # `poetry install` stops, the image builds as before, with a warning, and runs from /app.
        pyproject = stack.project / "pyproject.toml"
        pyproject.write_text(pyproject.read_text().replace('packages = [{ include = "shape_poetry", from = "src" }]\n', "")
                             .replace('name = "shape-poetry"', 'name = "shape-service"'))
        uncached(pyproject)
        proc = stack.compose("build", "app-blue")
        assert build_said(proc, "warning: Poetry finds no package to install")
        assert docker("run", "--rm", "--entrypoint", "sh", image, "-c",
                      "command -v shape-poetry-serve || echo absent").stdout.strip() == "absent"
        # Any other failure of the package's build fails the image's build, with Poetry's message.
        pyproject.write_text(pyproject.read_text().replace("[tool.poetry]\n", '[tool.poetry]\npackages = [{ include = "missing_dir" }]\n'))
        proc = stack.compose("build", "app-blue", check=False)
        assert proc.returncode != 0
        assert build_said(proc, "/build/missing_dir does not contain any element")
    finally:
        docker("image", "rm", "--force", image, check=False)
        run("rm", "-rf", stack.project)


def test_a_pipenv_app_with_a_stale_lock_is_refused_and_one_without_a_lock_still_builds(copie_session, lab):
    stack = rendered(copie_session, "python-pipenv", SHAPES["python-pipenv"], alone=True)
    image = f"{stack.answers['image_name']}:dev"
    pipfile = stack.project / "Pipfile"
    try:
        # A Pipfile changed since its lock: the build stops and says what to run.
        pipfile.write_text(pipfile.read_text().replace('humanize = "==4.11.0"', 'humanize = "==4.11.0"\nsix = "*"'))
        uncached(pipfile)  # the lock-less build below must run its steps, not find them in the cache
        proc = stack.compose("build", "app-blue", check=False)
        assert proc.returncode != 0
        assert "Pipfile.lock is out-of-date" in proc.stdout + proc.stderr and "pipenv lock" in proc.stdout + proc.stderr
        assert docker("image", "inspect", image, check=False).returncode != 0, "no image from a stale lock"
        # No lock at all: Pipenv resolves one in the build, saying so, and the image has it all.
        (stack.project / "Pipfile.lock").unlink()
        proc = stack.compose("build", "app-blue")
        assert build_said(proc, "warning: no Pipfile.lock: dependencies are resolved at build time")
        found = docker("run", "--rm", "--entrypoint", "python", image, "-c",
                       "import humanize, six, importlib.util as u; print(u.find_spec('iniconfig') is None)").stdout.strip()
        assert found == "True"
    finally:
        docker("image", "rm", "--force", image, check=False)
        run("rm", "-rf", stack.project)


def test_a_go_image_builds_the_modules_server_and_names_the_choice_when_there_are_several(copie_session, lab):
    """docker/go-main.sh, run as the Dockerfile's build stage runs it (the Go build image, the
    module root), without a network: which main package the image's server is built from."""
    stack = rendered(copie_session, "go-cmd-layout", SHAPES["go-cmd-layout"], alone=True)
    project = stack.project

    def chosen(go_main: str = "") -> tuple[int, str]:
        proc = docker("run", "--rm", "--network", "none", "--volume", f"{project}:/src", "--workdir", "/src",
                      "--env", f"GO_MAIN={go_main}", IMAGES["go"], "sh", "docker/go-main.sh", check=False)
        return proc.returncode, (proc.stdout + proc.stderr).strip()

    def main_package(directory: str) -> None:
        (project / directory).mkdir(parents=True, exist_ok=True)
        (project / directory / "main.go").write_text("package main\n\nfunc main() {}\n")

    try:
        # The one under cmd/, not the tool elsewhere; GO_MAIN, when set, as given.
        assert chosen() == (0, "./cmd/shape-server")
        assert chosen("./tools/routes") == (0, "./tools/routes")
        # Two under cmd/: none is guessed.
        main_package("cmd/migrate")
        assert chosen() == (1, "error: several main packages (./cmd/migrate ./cmd/shape-server ./tools/routes): "
                               "set the build argument GO_MAIN to the server's, e.g. ARG GO_MAIN=./cmd/migrate in the Dockerfile")
        # The module root, when it is a main package, whatever else there is.
        main_package(".")
        assert chosen() == (0, ".")
        # None under cmd/: the module's only main package.
        for directory in ("cmd", "main.go"):
            run("rm", "-rf", project / directory)
        assert chosen() == (0, "./tools/routes")
        run("rm", "-rf", project / "tools")
        assert chosen() == (1, "error: no main package in this Go module: the server's package must be 'package main' with a func main")
    finally:
        run("rm", "-rf", project)


def failed_first_deploy(copie_session, shape: str, start_command: str) -> subprocess.CompletedProcess:
    """scripts/deploy.sh dev v1 of SHAPE's app started by START_COMMAND, which must fail; the stack,
    its image and the project are removed afterwards, leaving nothing behind."""
    stack = rendered(copie_session, shape, dict(SHAPES[shape], start_command=start_command), alone=True)
    image = f"{stack.answers['image_name']}:v1"
    try:
        proc = deploy_release(stack.project, "dev", "v1", check=False)
    finally:
        stack.down()
        docker("image", "rm", "--force", image, check=False)
    assert stack.leftovers() == {"containers": [], "volumes": [], "networks": []}
    run("rm", "-rf", stack.project)
    assert proc.returncode != 0
    return proc


def test_a_deploy_of_an_app_listening_on_localhost_only_fails_saying_so(copie_session, lab):
    """gunicorn bound to 127.0.0.1: it answers a check on the loopback address, but the proxy, on
    another container, cannot reach it. The first deploy fails, and its last line says why."""
    proc = failed_first_deploy(copie_session, "python-pyproject-without-lock", "gunicorn --bind 127.0.0.1:5001 app:app")
    last = proc.stderr.strip().splitlines()[-1]
    assert "deploy v1 to dev failed: the stack did not become healthy (app-blue is unhealthy: its health check said: " \
           "the app answers on localhost only, not on " in last, last
    assert "make it listen on all addresses, e.g. uvicorn --host 0.0.0.0, gunicorn --bind 0.0.0.0:5001" in last, last


def test_a_deploy_of_an_app_that_cannot_start_fails_showing_its_last_log_lines(copie_session, lab):
    """A start command naming a file the app does not have: the container exits at once and
    restarts. The first deploy fails; its last line says how the app stopped, and the lines above
    it hold the app's own error (Node.js ends a crash with its version, not the error)."""
    proc = failed_first_deploy(copie_session, "node-without-lock", "node missing.js")
    last = proc.stderr.strip().splitlines()[-1]
    assert re.search(r"deploy v1 to dev failed: the stack did not become healthy \(app-blue stopped with exit code 1 "
                     r"\(\d+ restarts; it is \w+\): its last log lines are above;", last), last
    above = proc.stderr.split("the last log lines of app-blue:\n", 1)[1]
    assert "Error: Cannot find module '/app/missing.js'" in above, proc.stderr[-3000:]
