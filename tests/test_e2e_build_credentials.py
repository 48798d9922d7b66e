"""Private registries at build time: an app whose dependencies come from a registry that wants a
token builds with the token in BUILD_ENV_FILE (the BuildKit secret build_env), fails without it,
and no layer of its image holds the token.

The private registry is this module's own: a small HTTP server on 127.0.0.1 speaking as much of
npm's registry API and PyPI's simple index as an install needs, answering 401 without the token.
The builds reach it with BUILD_NETWORK=host (their steps on the host's network); the public
registries (npm, PyPI) stay reachable as in every build here. Node (npm, an .npmrc reading
${NPM_TOKEN}) and Python (pip, PIP_EXTRA_INDEX_URL with the token) are built; uv, Poetry and Go
read the same secret in the same way (tests/test_render.py checks each of their fetching steps)."""

from __future__ import annotations

import base64
import gzip
import hashlib
import http.server
import io
import json
import os
import secrets
import tarfile
import threading
import uuid
import zipfile
from pathlib import Path

import pytest

from conftest import run
from e2e_support import docker, free_port

pytestmark = pytest.mark.e2e

# Names no public registry serves (pip looks on PyPI too).
NPM_PACKAGE = "@dp-private/greeting"
PYPI_PACKAGE = "dp-private-greeting-5d1c"
GREETING = "hello from the private registry"


def npm_tarball() -> bytes:
    files = {"package/package.json": json.dumps({"name": NPM_PACKAGE, "version": "1.0.0", "main": "index.js"}),
             "package/index.js": f"module.exports = {json.dumps(GREETING)};\n"}
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def wheel() -> tuple[str, bytes]:
    module = PYPI_PACKAGE.replace("-", "_")
    name = f"{module}-1.0.0-py3-none-any.whl"
    dist = f"{module}-1.0.0.dist-info"
    files = {f"{module}/__init__.py": f"GREETING = {GREETING!r}\n",
             f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {PYPI_PACKAGE}\nVersion: 1.0.0\n",
             f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b'=').decode()},"
                     f"{len(text.encode())}\n" for path, text in files.items()) + f"{dist}/RECORD,,\n"
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for path, text in {**files, f"{dist}/RECORD": record}.items():
            archive.writestr(path, text)
    return name, out.getvalue()


class PrivateRegistry(http.server.ThreadingHTTPServer):
    """npm (Bearer TOKEN) and a simple index (Basic with password TOKEN) on 127.0.0.1:PORT;
    `seen` records (path, authorized) of every request."""

    def __init__(self, token: str):
        super().__init__(("127.0.0.1", free_port()), Handler)
        self.token = token
        self.seen: list[tuple[str, bool]] = []
        self.tarball = npm_tarball()
        self.wheel_name, self.wheel = wheel()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(http.server.BaseHTTPRequestHandler):
    server: PrivateRegistry

    def log_message(self, *args) -> None:
        pass

    def authorized(self) -> bool:
        header = self.headers.get("Authorization", "")
        if header == f"Bearer {self.server.token}":
            return True
        if header.startswith("Basic "):
            return base64.b64decode(header[6:]).decode().partition(":")[2] == self.server.token
        return False

    def answer(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        if status == 401:
            self.send_header("WWW-Authenticate", 'Basic realm="private"')
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        ok = self.authorized()
        self.server.seen.append((self.path, ok))
        if not ok:
            return self.answer(401, b'{"error": "token required"}', "application/json")
        url = self.server.url
        tarball = f"{url}/{NPM_PACKAGE}/-/greeting-1.0.0.tgz"
        if self.path.lower() in (f"/{NPM_PACKAGE.replace('/', '%2f')}", f"/{NPM_PACKAGE}"):
            packument = {"name": NPM_PACKAGE, "dist-tags": {"latest": "1.0.0"},
                         "versions": {"1.0.0": {"name": NPM_PACKAGE, "version": "1.0.0", "main": "index.js",
                                                "dist": {"tarball": tarball,
                                                         "shasum": hashlib.sha1(self.server.tarball).hexdigest()}}}}
            return self.answer(200, json.dumps(packument).encode(), "application/json")
        if self.path == tarball.removeprefix(url):
            return self.answer(200, self.server.tarball, "application/octet-stream")
        if self.path.rstrip("/") == f"/simple/{PYPI_PACKAGE}":
            digest = hashlib.sha256(self.server.wheel).hexdigest()
            page = f'<a href="/files/{self.server.wheel_name}#sha256={digest}">{self.server.wheel_name}</a>'
            return self.answer(200, page.encode(), "text/html")
        if self.path == f"/files/{self.server.wheel_name}":
            return self.answer(200, self.server.wheel, "application/octet-stream")
        return self.answer(404, b"not here", "text/plain")


@pytest.fixture(scope="module")
def registry():
    server = PrivateRegistry(token=f"dp-build-token-{secrets.token_hex(12)}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


APPS = {
    "node": dict(answers=dict(runtime="node", app_port=4500, start_command="node server.js"),
                 files=lambda registry: {
                     "package.json": json.dumps({"name": "private-deps", "version": "1.0.0",
                                                 "dependencies": {NPM_PACKAGE: "1.0.0"}}),
                     "server.js": f"console.log(require({NPM_PACKAGE!r}));\n",
                     # The usual private-registry .npmrc: the token from the environment.
                     ".npmrc": f"@dp-private:registry={registry.url}/\n"
                               f"//127.0.0.1:{registry.server_address[1]}/:_authToken=${{NPM_TOKEN}}\n"},
                 credentials=lambda registry: f"NPM_TOKEN={registry.token}\n",
                 check=["node", "-e", f"console.log(require({NPM_PACKAGE!r}))"]),
    "python": dict(answers=dict(runtime="python", python_installer="pip", app_port=5500, start_command="python app.py"),
                   files=lambda registry: {"requirements.txt": f"{PYPI_PACKAGE}==1.0.0\n",
                                           "app.py": "print('private deps')\n"},
                   credentials=lambda registry: f"# the team's index\nPIP_EXTRA_INDEX_URL=\"http://deploy:{registry.token}@"
                                                f"127.0.0.1:{registry.server_address[1]}/simple/\"\n",
                   check=["python", "-c", f"import {PYPI_PACKAGE.replace('-', '_')} as m; print(m.GREETING)"]),
}


@pytest.mark.parametrize("runtime", APPS)
def test_an_app_with_private_dependencies_builds_with_the_token_and_no_layer_keeps_it(copie_session, lab, registry, tmp_path, runtime):
    app = APPS[runtime]
    result = copie_session.copy(extra_answers=dict(
        example_app=False, environments=["dev"], database="none", cache="none", monitoring="none", process_manager="none",
        project_name=f"Private deps {runtime}", **app["answers"]))
    assert result.exit_code == 0, result.exception
    project = result.project_dir
    for name, text in app["files"](registry).items():
        (project / name).write_text(text)
    # A build of its own: BuildKit's cache does not key on a secret, and an earlier run's layer,
    # built with the token, would let the build without it pass.
    requirements = project / ("package.json" if runtime == "node" else "requirements.txt")
    if runtime == "node":
        requirements.write_text(json.dumps({**json.loads(requirements.read_text()), "description": f"run {uuid.uuid4()}"}))
    else:
        requirements.write_text(requirements.read_text() + f"# run {uuid.uuid4()}\n")
    image = f"private-deps-{runtime}"
    build_env = {**os.environ, "BUILD_NETWORK": "host"}
    try:
        # Without the token: the registry refuses, and so the build fails; no image.
        refused = run(project / "scripts" / "build.sh", "dev", "v1", env=build_env, check=False, timeout=900)
        assert refused.returncode != 0, refused.stderr[-2000:]
        assert not any(ok for _, ok in registry.seen)
        assert docker("image", "inspect", f"{image}:v1", check=False).returncode != 0

        # With it, in a file only its owner reads: the build's dependency steps get it.
        credentials = tmp_path / "build.env"
        credentials.write_text(app["credentials"](registry))
        credentials.chmod(0o600)
        built = run(project / "scripts" / "build.sh", "dev", "v1", env={**build_env, "BUILD_ENV_FILE": str(credentials)},
                    check=False, timeout=900)
        assert built.returncode == 0, built.stderr[-3000:]
        assert built.stdout.strip().splitlines()[-1] == f"{image}:v1"
        assert any(ok for _, ok in registry.seen), registry.seen
        assert run("docker", "run", "--rm", "--entrypoint", app["check"][0], f"{image}:v1", *app["check"][1:]).stdout.strip() == GREETING

        # Nowhere in the image: not in a layer's files, its history or its configuration.
        saved = tmp_path / "image.tar"
        docker("image", "save", "--output", str(saved), f"{image}:v1", timeout=300)
        with tarfile.open(saved) as tar:
            for member in filter(tarfile.TarInfo.isfile, tar):
                data = tar.extractfile(member).read()
                if data[:2] == b"\x1f\x8b":
                    data = gzip.decompress(data)
                assert registry.token.encode() not in data, f"{member.name} holds the token"
        assert registry.token not in docker("image", "history", "--no-trunc", f"{image}:v1").stdout
        assert registry.token not in docker("image", "inspect", f"{image}:v1").stdout
    finally:
        docker("image", "rm", "--force", f"{image}:v1", check=False)
        run("rm", "-rf", project)
        registry.seen.clear()
