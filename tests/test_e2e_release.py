"""Release operations against real stacks, under load: versioned deploys without failed requests,
a broken version (health check or migration) that never reaches users, rollback to the exact
previous image (and the data before a deploy), and one deploy per environment at a time. Each
deploy strategy (rolling, blue-green) behind each proxy: each proxy switches in its own way.

The load is what exposes a replica stopped while the proxy could still send it a request: GETs,
POSTs (which no proxy retries elsewhere) and slow requests that keep a stopping replica busy (the
app of this test answers /slow after 1.5 s; its source is patched here, before the first build)."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from conftest import run
from e2e_support import TRAFFIC, Load, Stack, add_slow_route, deploy_release, docker, inspect, wait_until

pytestmark = pytest.mark.e2e

# Both strategies start the new version in the idle colour and switch the proxy to it (nginx: a
# reload; Caddy: a name read at every request; Traefik: its watched file provider); rolling then
# stops the old colour, blue-green keeps it.
VARIANTS = {
    "rolling-nginx-postgres": dict(proxy="nginx", database="postgres", deploy_strategy="rolling"),
    "rolling-caddy-mariadb": dict(proxy="caddy", database="mariadb", deploy_strategy="rolling"),
    "rolling-traefik-postgres": dict(proxy="traefik", database="postgres", deploy_strategy="rolling"),
    "blue-green-nginx-mariadb": dict(proxy="nginx", database="mariadb", deploy_strategy="blue-green"),
    "blue-green-caddy-postgres": dict(proxy="caddy", database="postgres", deploy_strategy="blue-green"),
    "blue-green-traefik-postgres": dict(proxy="traefik", database="postgres", deploy_strategy="blue-green"),
}
COMMON = dict(environments=["production"], monitoring="none", process_manager="none", tls="none", cache="none",
              app_replicas=2)


@pytest.fixture(scope="module", params=VARIANTS)
def stack(request, copie_session, lab):
    stack = Stack.rendered(copie_session, {**COMMON, **VARIANTS[request.param], "project_name": f"Release {request.param}"})
    add_slow_route(stack.project)
    yield stack
    stack.down()
    for version in ("v1", "v2", "v3", "v4", "v5", "v6", "v7"):
        docker("image", "rm", "--force", f"{stack.answers['image_name']}:{version}", check=False)
    assert stack.leftovers() == {"containers": [], "volumes": [], "networks": []}


def deploy(stack: Stack, version: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return deploy_release(stack.project, "production", version, *args, check=check)


def rollback(stack: Stack, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(stack.project / "scripts" / "rollback.sh", "production", *args, cwd=stack.project, check=check, timeout=900)


def history(stack: Stack) -> list[dict]:
    lines = (stack.project / ".deploy" / "production" / "releases.tsv").read_text().splitlines()
    keys = lines[0].split("\t")
    return [dict(zip(keys, line.split("\t"))) for line in lines[1:]]


def serving(stack: Stack) -> set[str]:
    """Versions answering through the proxy (asked often enough to reach every replica)."""
    return {stack.get_json("/")["version"] for _ in range(12)}


def blue_green(stack: Stack) -> bool:
    return stack.answers["deploy_strategy"] == "blue-green"


def active_colour(stack: Stack) -> str:
    return (stack.project / ".deploy" / "production" / "active-colour").read_text().strip()


def app_service(stack: Stack, which: str = "active") -> str:
    """The Compose service (colour) that serves ("active") or does not ("idle")."""
    colour = active_colour(stack)
    return f"app-{colour if which == 'active' else {'blue': 'green', 'green': 'blue'}[colour]}"


def replica_images(stack: Stack, which: str = "active") -> set[str]:
    return {inspect(c["Name"])["Image"] for c in stack.containers(app_service(stack, which))}


def image_id(stack: Stack, version: str) -> str:
    return json.loads(docker("image", "inspect", f"{stack.answers['image_name']}:{version}").stdout)[0]["Id"]


def under_load(stack: Stack, action):
    with Load(stack.ports["HTTP_PORT"], requests=TRAFFIC) as load:
        time.sleep(2)
        result = action()
        time.sleep(3)  # requests continue after the switch, against the new colour only
    assert len(load.results) > 50 and set(load.succeeded) == set(TRAFFIC), f"every kind of request ran: {load.succeeded}"
    return result, load


def no_failures(load: Load) -> None:
    assert load.failed == [], f"{len(load.failed)} failed of {len(load.results)}: {load.failed[:10]}"


def test_first_deploy_then_a_new_version_without_failed_requests(stack):
    deploy(stack, "v1")
    assert serving(stack) == {"v1"}
    proxy_before = inspect(stack.container("proxy"))
    _, load = under_load(stack, lambda: deploy(stack, "v2"))
    proxy_after = inspect(stack.container("proxy"))
    # The proxy was reconfigured, never restarted or recreated.
    assert (proxy_after["Id"], proxy_after["State"]["StartedAt"]) == (proxy_before["Id"], proxy_before["State"]["StartedAt"])
    no_failures(load)
    assert load.versions() == {"v1", "v2"}
    assert serving(stack) == {"v2"}
    assert replica_images(stack) == {image_id(stack, "v2")} and len(stack.containers(app_service(stack))) == 2
    assert [(r["version"], r["kind"]) for r in history(stack)] == [("v1", "deploy"), ("v2", "deploy")]
    assert history(stack)[-1]["image"] == image_id(stack, "v2")
    settings = (stack.project / "env/production.env").read_text().splitlines()
    assert "APP_VERSION=v2" in settings
    # v2 went to the idle colour, which now serves.
    assert active_colour(stack) == "green" and "APP_GREEN_VERSION=v2" in settings
    if blue_green(stack):
        # The colour that served keeps v1 running for a rollback.
        assert replica_images(stack, "idle") == {image_id(stack, "v1")} and len(stack.containers("app-blue")) == 2
    else:
        # Rolling: the colour that served finished its requests and stopped, and stays stopped.
        assert stack.containers("app-blue", all_states=True) == [] and "APP_BLUE_REPLICAS=0" in settings


def test_a_version_failing_its_health_check_never_serves(stack):
    main = stack.project / "app" / "main.py"
    original = main.read_text()
    main.write_text(original.replace('return "health", "200 OK"', 'return "health", "500 Internal Server Error"'))
    try:
        before = history(stack)
        proc, load = under_load(stack, lambda: deploy(stack, "v3", check=False))
    finally:
        main.write_text(original)
    assert proc.returncode != 0
    assert "did not become healthy; v2 is still serving" in proc.stderr.strip().splitlines()[-1]
    no_failures(load)
    assert load.versions() == {"v2"}, "no user request reached the broken version"
    assert serving(stack) == {"v2"} and replica_images(stack) == {image_id(stack, "v2")}
    assert history(stack) == before
    assert active_colour(stack) == "green"
    if blue_green(stack):
        # The idle colour went back to the release it kept: a rollback still needs no start.
        assert replica_images(stack, "idle") == {image_id(stack, "v1")}
        wait_until(lambda: all(inspect(c["Name"])["State"]["Health"]["Status"] == "healthy"
                               for c in stack.containers("app-blue")), 120, "the idle colour is healthy again")
    else:
        assert stack.containers("app-blue", all_states=True) == [], "the broken version's replicas are gone"


def test_a_version_failing_its_migration_never_serves(stack):
    broken = stack.project / "migrations" / "0002_broken.sql"
    broken.write_text("SELECT * FROM no_such_table;\n")
    try:
        before = history(stack)
        proc, load = under_load(stack, lambda: deploy(stack, "v4", check=False))
    finally:
        broken.unlink()
    assert proc.returncode != 0
    assert "its migrations failed (users are still served by v2)" in proc.stderr.strip().splitlines()[-1]
    no_failures(load)
    assert serving(stack) == {"v2"} and history(stack) == before


def test_a_second_deploy_of_the_environment_is_refused(stack):
    run(stack.project / "scripts" / "build.sh", "production", "v5", cwd=stack.project, timeout=900)
    first = subprocess.Popen([str(stack.project / "scripts" / "deploy.sh"), "production", "v5"], cwd=stack.project,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1)
        second = deploy(stack, "v6", check=False)
        assert second.returncode != 0
        assert "another deploy or rollback of production is running" in second.stderr
    finally:
        out, err = first.communicate(timeout=900)
    assert first.returncode == 0, err
    assert serving(stack) == {"v5"}


def test_a_named_version_is_never_built_by_deploy(stack):
    """deploy.sh builds only this checkout's own commit from a clean tree: an unknown name is refused
    before anything changes, with the pull's error and scripts/build.sh as the fix."""
    before = history(stack)
    proc = run(stack.project / "scripts" / "deploy.sh", "production", "v-never-built", cwd=stack.project, check=False, timeout=300)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert "is not on this host and the pull failed" in last and "scripts/build.sh production v-never-built" in last, last
    assert docker("image", "inspect", f"{stack.answers['image_name']}:v-never-built", check=False).returncode != 0
    assert history(stack) == before and serving(stack) == {"v5"}
    again = run(stack.project / "scripts" / "build.sh", "production", "v5", cwd=stack.project, check=False)
    assert again.returncode != 0 and "a release is never rebuilt" in again.stderr, again.stderr


def test_rollback_returns_the_exact_previous_image_without_failed_requests(stack):
    assert history(stack)[-1]["version"] == "v5"
    proc, load = under_load(stack, lambda: rollback(stack))
    no_failures(load)
    assert "rolled production back to v2" in proc.stderr
    assert serving(stack) == {"v2"}
    recorded = next(r["image"] for r in history(stack) if r["version"] == "v2" and r["kind"] == "deploy")
    assert replica_images(stack) == {recorded}
    assert history(stack)[-1]["kind"] == "rollback"
    if blue_green(stack):
        # v2 was still running in the idle colour: the rollback was a proxy reload, nothing started.
        assert "runs it already" in proc.stderr
        assert replica_images(stack, "idle") == {image_id(stack, "v5")}


def test_rollback_with_restore_db_brings_back_the_data_before_the_deploy(stack):
    assert stack.http("POST", "/items", {"name": "before v7"})[0] == 201
    before = stack.get_json("/items")["items"]
    deploy(stack, "v7")
    assert stack.http("POST", "/items", {"name": "written by v7"})[0] == 201
    assert len(stack.get_json("/items")["items"]) == len(before) + 1
    proc = rollback(stack, "--restore-db")
    assert "data restored from" in proc.stderr
    assert serving(stack) == {"v2"}
    assert stack.get_json("/items")["items"] == before
