"""Existing applications, not the example apps: small apps of the shapes real projects have
(tests/fixtures/apps/), each with its own port, health path and start command and no metrics,
rendered with example_app=false, built by the rendered Dockerfile and served through the proxy.

Not tested here, and why: Poetry without a lock file (Poetry resolves through PyPI's JSON API,
which this lab's PyPI mirror does not serve); Go modules from a module proxy (none is reachable
here: the vendored shape builds without one)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from conftest import HEALTH_ANSWERS, free_port, run
from e2e_support import Stack, docker
from extensions.catalogue import IMAGES
from extensions.model import app_healthcheck

pytestmark = pytest.mark.e2e

FIXTURES = Path(__file__).parent / "fixtures" / "apps"
COMMON = dict(example_app=False, environments=["dev"], database="none", cache="none", monitoring="none",
              process_manager="none", health_path="/health")
SHAPES = {
    "python-requirements-without-hashes": dict(runtime="python", python_installer="pip", app_port=5000,
                                               start_command="gunicorn --bind 0.0.0.0:5000 app:app"),
    "python-pyproject-without-lock": dict(runtime="python", python_installer="uv", app_port=5001,
                                          start_command="gunicorn --bind 0.0.0.0:5001 app:app"),
    # A package (src layout, a console script, uv.lock): importable only once installed.
    "python-src-package": dict(runtime="python", python_installer="uv", app_port=5002, start_command="shape-serve"),
    "node-without-lock": dict(runtime="node", app_port=4000, start_command="node server.js"),
    # TypeScript: `npm run build` (tsc, a development dependency) makes dist/, which the image runs.
    "node-typescript-build": dict(runtime="node", app_port=4100, start_command="node dist/server.js"),
    "go-vendored": dict(runtime="go", app_port=7000, start_command="/app/server"),
}


# What each shape's app answers at / as "shape".
SERVES = {"python-requirements-without-hashes": "python", "python-pyproject-without-lock": "python",
          "python-src-package": "python-package",
          "node-without-lock": "node", "node-typescript-build": "node-typescript", "go-vendored": "go-vendored"}


def rendered(copie_session, shape: str, answers: dict) -> Stack:
    result = copie_session.copy(extra_answers={**COMMON, **answers, "project_name": f"Shape {shape}"})
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
        assert stack.get_json("/health")["path"] == "/health"
        assert stack.get_json("/")["shape"] == SERVES[shape]
        status, _, _ = stack.http("GET", "/metrics")
        assert status == 404, "the proxy hides /metrics whatever the app serves"
    finally:
        stack.down()
        docker("image", "rm", "--force", f"{stack.answers['image_name']}:dev", check=False)
    assert stack.leftovers() == {"containers": [], "volumes": [], "networks": []}


def test_a_node_app_with_a_build_script_runs_its_output_without_development_dependencies(copie_session, lab):
    stack = rendered(copie_session, "node-typescript-build", SHAPES["node-typescript-build"])
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


def test_an_app_locked_by_another_package_manager_is_refused_with_what_to_do(copie_session, lab):
    stack = rendered(copie_session, "node-with-yarn-lock", dict(runtime="node", app_port=4000, start_command="node server.js"))
    proc = stack.compose("build", "app-blue", check=False)
    assert proc.returncode != 0
    assert "found yarn.lock, but this image installs with npm" in proc.stdout + proc.stderr
    assert "npm install --package-lock-only" in proc.stdout + proc.stderr
    run("rm", "-rf", stack.project)


def test_a_python_package_without_a_lock_is_installed_with_its_dependencies_resolved(copie_session, lab):
    stack = rendered(copie_session, "python-src-package", SHAPES["python-src-package"])
    (stack.project / "uv.lock").unlink()
    image = f"{stack.answers['image_name']}:dev"
    try:
        proc = stack.compose("build", "app-blue")
        assert "warning: no uv.lock" in proc.stdout + proc.stderr
        # Installed, not editable: importable from anywhere, its console script on PATH.
        check = docker("run", "--rm", "--workdir", "/tmp", "--entrypoint", "sh", image, "-c",
                       "command -v shape-serve && python -c 'import shape_package.serve as s; print(s.__file__)'")
        script, module = check.stdout.split()
        assert script == "/opt/venv/bin/shape-serve"
        assert re.fullmatch(r"/opt/venv/lib/python3\.\d+/site-packages/shape_package/serve\.py", module), module
    finally:
        docker("image", "rm", "--force", image, check=False)
        run("rm", "-rf", stack.project)


def test_the_go_images_health_check_passes_on_200_or_204_and_fails_otherwise(lab, status_server):
    """Go's image runs from scratch: its check is the busybox wget the Dockerfile copies in, run
    here from that busybox image (Python's and Node's checks: tests/test_extension.py)."""
    def healthy(port: int, path: str) -> bool:
        check = app_healthcheck("go", port, path)[1:]
        return docker("run", "--rm", "--network", "host", IMAGES["busybox"], *check, check=False).returncode == 0

    answers = {path: healthy(status_server, path) for path in HEALTH_ANSWERS}
    answers["refused"] = healthy(free_port(), "/s/200")
    assert answers == {**HEALTH_ANSWERS, "refused": False}
