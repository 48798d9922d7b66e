"""Maintenance mode behind each proxy, under load: `scripts/maintenance.sh ENV on` makes every
request but the health path answer 503 with Retry-After (and, nginx and Caddy, the page with the
message), `off` serves the app again; neither drops a connection or restarts the proxy."""

from __future__ import annotations

import http.client
import time

import pytest

from conftest import run
from e2e_support import Load, Stack, deploy_release, docker, inspect

pytestmark = pytest.mark.e2e

COMMON = dict(environments=["production"], database="none", cache="none", monitoring="none", tls="none",
              process_manager="none", app_replicas=2)
PROXIES = ["nginx", "caddy", "traefik"]
MESSAGE = "Back at <noon> & then some"


@pytest.fixture(scope="module", params=PROXIES)
def stack(request, copie_session, lab):
    stack = Stack.rendered(copie_session, {**COMMON, "proxy": request.param, "project_name": f"Maintenance {request.param}"})
    deploy_release(stack.project, "production", "v1")
    yield stack
    stack.down()
    docker("image", "rm", "--force", f"{stack.answers['image_name']}:v1", check=False)


def get(stack: Stack, path: str) -> tuple[int, dict, str]:
    conn = http.client.HTTPConnection("127.0.0.1", stack.ports["HTTP_PORT"], timeout=10)
    conn.request("GET", path)
    response = conn.getresponse()
    result = response.status, {k.lower(): v for k, v in response.getheaders()}, response.read().decode(errors="replace")
    conn.close()
    return result


def maintenance(stack: Stack, *args: str):
    return run(stack.project / "scripts" / "maintenance.sh", "production", *args, cwd=stack.project, timeout=120)


def test_maintenance_goes_on_and_off_under_load_without_dropping_anything(stack):
    proxy = inspect(stack.container("proxy"))
    with Load(stack.ports["HTTP_PORT"], "/", threads=4, pause=0.02) as load:
        time.sleep(1)
        maintenance(stack, "on", "--message", MESSAGE)
        on = time.monotonic()
        status, headers, body = get(stack, "/")
        assert status == 503 and headers["retry-after"] == "300", (status, headers)
        if stack.answers["proxy"] != "traefik":  # Traefik serves no files: its own short answer
            assert "Back at &lt;noon&gt; &amp; then some" in body and "<noon>" not in body
        # The health path still reaches the app (monitors see the truth).
        assert get(stack, stack.answers["health_path"])[0] == 200
        time.sleep(2)
        turning_off = time.monotonic()  # from here requests may be served again, before off returns
        maintenance(stack, "off")
        off = time.monotonic()
        time.sleep(2)
    statuses = {r[1] for r in load.results}
    assert statuses <= {200, 503}, f"a request failed otherwise than with maintenance's 503: {statuses}"
    assert not [r for r in load.results if on <= r[0] < turning_off and r[1] != 503], "maintenance answered every request once on"
    assert not [r for r in load.results if r[0] >= off and r[1] != 200], "the app answers again once off"
    assert any(r[1] == 503 for r in load.results) and sum(1 for r in load.results if r[0] >= off) > 20
    after = inspect(stack.container("proxy"))
    assert (after["Id"], after["State"]["StartedAt"]) == (proxy["Id"], proxy["State"]["StartedAt"]), "no restart"
    assert (stack.project / ".deploy" / "production" / "maintenance").read_text().strip() == "off"


def test_maintenance_refuses_bad_arguments_before_anything_changes(stack):
    proc = run(stack.project / "scripts" / "maintenance.sh", "production", "sideways", cwd=stack.project, check=False)
    assert proc.returncode != 0 and "usage: scripts/maintenance.sh ENV on" in proc.stderr
    proc = run(stack.project / "scripts" / "maintenance.sh", "production", "on", "--message", cwd=stack.project, check=False)
    assert proc.returncode != 0 and "--message needs a text" in proc.stderr
    assert get(stack, "/")[0] == 200
