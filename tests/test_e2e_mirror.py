"""IMAGE_MIRROR: every image of a stack, the Dockerfile's base images included, from one registry
(a private one for hosts without internet, or a pull-through mirror). Here it is Debian's
docker-registry (distribution 2.8) on 127.0.0.1, filled with this lab's images. Before the images
are there, `scripts/compose.sh ENV up` refuses in one line that names them and the setting."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request

import pytest

from conftest import require_tool
from extensions.catalogue import IMAGES, image_location
from e2e_support import Stack, docker, free_port, wait_until

pytestmark = pytest.mark.e2e

ANSWERS = dict(project_name="Mirror", environments=["production"], database="postgres", cache="redis", monitoring="none",
               proxy="caddy", tls="none", process_manager="none", app_replicas=1)


@pytest.fixture
def registry(tmp_path, lab):
    port = free_port()
    config = tmp_path / "registry.yml"
    config.write_text(f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {tmp_path / 'storage'}\n"
                      f"http:\n  addr: 127.0.0.1:{port}\nlog:\n  level: info\n")
    log = (tmp_path / "registry.log").open("w")
    proc = subprocess.Popen([require_tool("docker-registry"), "serve", str(config)], stdout=log, stderr=log)
    address = f"127.0.0.1:{port}"

    def answers() -> bool:
        try:
            return urllib.request.urlopen(f"http://{address}/v2/", timeout=2).status == 200
        except OSError:
            return False

    try:
        wait_until(answers, 30, "the registry to answer")
        yield address, tmp_path / "registry.log"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def mirrored_images(stack: Stack, mirror: str) -> dict[str, str]:
    """Every image of the stack that the mirror must hold (services and the Dockerfile's base
    images, the app's own excepted): mirror reference -> the lab's local image."""
    model = json.loads(stack.compose("config", "--format", "json").stdout)
    refs = {s.get("image") for s in model["services"].values()}
    refs |= {v for s in model["services"].values() for v in ((s.get("build") or {}).get("args") or {}).values()}
    local = {image_location(key)[1]: IMAGES[key] for key in IMAGES}
    return {ref: local[ref.removeprefix(mirror + "/")] for ref in sorted(r for r in refs if r and r.startswith(mirror + "/"))}


def test_every_image_comes_from_the_mirror(copie_session, registry):
    registry, registry_log = registry
    stack = Stack.rendered(copie_session, ANSWERS)
    env_file = stack.project / "env" / "production.env"
    env_file.write_text(env_file.read_text() + f"IMAGE_MIRROR={registry}\n")
    images = mirrored_images(stack, registry)
    assert any("/library/postgres:" in i for i in images) and any("/library/python:" in i for i in images), images
    pushed = []
    try:
        # An empty mirror: one line names what is missing and the setting that fixes it.
        refused = stack.compose("up", "--detach", "--build", "--wait", check=False)
        assert refused.returncode != 0
        reason = refused.stderr.strip().splitlines()[-1]
        assert "IMAGE_MIRROR in env/production.env" in reason and f"{registry}/library/postgres:" in reason, reason
        assert stack.containers(all_states=True) == [], "nothing was started"
        # Fill the mirror with this lab's images, under the same paths, and keep no local copy.
        for image, local in images.items():
            docker("tag", local, image)
            docker("push", "--quiet", image, timeout=600)
            docker("image", "rm", image)
            pushed.append(image)
        started = time.monotonic()
        stack.up()
        served = registry_log.read_text()
        for image in images:  # each came from the mirror: services' images to Docker's store,
            path = image.removeprefix(registry + "/").rsplit(":", 1)[0]  # base images to BuildKit's
            assert re.search(rf'"(GET|HEAD) /v2/{re.escape(path)}/manifests/', served), f"{image} was not pulled from the mirror"
        assert stack.get_json(stack.answers["health_path"]) == {"status": "ok"}
        assert time.monotonic() - started < 600
    finally:
        stack.down()
        for image in pushed:
            docker("image", "rm", "--force", image, check=False)
        docker("image", "rm", "--force", f"{stack.answers['image_name']}:dev", check=False)
