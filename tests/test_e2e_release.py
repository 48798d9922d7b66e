"""Release operations against real stacks, under load: versioned deploys without failed requests,
a broken version (health check or migration) that never reaches users, rollback to the exact
previous image (and the data before a deploy), one deploy per environment at a time, and a
rotated secret (the app's database password, the cache's) that reaches the app without downtime.
Each deploy strategy (rolling, blue-green) behind each proxy: each proxy switches in its own way.

The load is what exposes a replica stopped while the proxy could still send it a request: GETs,
POSTs (which no proxy retries elsewhere) and slow requests that keep a stopping replica busy (the
app of this test answers /slow after 1.5 s; its source is patched here, before the first build)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from conftest import run
from e2e_support import (TRAFFIC, Load, Stack, add_slow_route, address_seen_from, build_release, deploy_release, docker,
                          inspect, wait_until)

pytestmark = pytest.mark.e2e

# Both strategies start the new version in the idle colour and switch the proxy to it (nginx: a
# marker file looked for at every request, a reload only when its configuration changed; Caddy: a
# name read at every request; Traefik: its watched file provider); rolling then stops the old
# colour, blue-green keeps it.
VARIANTS = {
    # With the cache: its password is rotated too (the example app asks it at every GET /).
    "rolling-nginx-postgres": dict(proxy="nginx", database="postgres", deploy_strategy="rolling", cache="redis"),
    "rolling-caddy-mariadb": dict(proxy="caddy", database="mariadb", deploy_strategy="rolling"),
    "rolling-traefik-postgres": dict(proxy="traefik", database="postgres", deploy_strategy="rolling"),
    "blue-green-nginx-mariadb": dict(proxy="nginx", database="mariadb", deploy_strategy="blue-green"),
    "blue-green-caddy-postgres": dict(proxy="caddy", database="postgres", deploy_strategy="blue-green", cache="redis"),
    "blue-green-traefik-postgres": dict(proxy="traefik", database="postgres", deploy_strategy="blue-green"),
}
COMMON = dict(environments=["production"], monitoring="none", process_manager="none", tls="none", cache="none",
              app_replicas=2)


@pytest.fixture(scope="module", params=VARIANTS)
def stack(request, copie_session, lab):
    stack = Stack.rendered(copie_session, {**COMMON, **VARIANTS[request.param], "project_name": f"Release {request.param}"})
    add_slow_route(stack.project)
    remove_versions(stack)  # an interrupted earlier run's: a deploy must build or refuse each one
    yield stack
    stack.down()
    remove_versions(stack)
    assert stack.leftovers() == {"containers": [], "volumes": [], "networks": []}


def remove_versions(stack: Stack) -> None:
    for version in ("v1", "v2", "v3", "v4", "v5", "v6", "v7"):
        docker("image", "rm", "--force", f"{stack.answers['image_name']}:{version}", check=False)


def deploy(stack: Stack, version: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return deploy_release(stack.project, "production", version, *args, check=check)


def deploy_under_load(stack: Stack, version: str, check: bool = True):
    """VERSION built first, then deployed under load (under_load)."""
    build_release(stack.project, "production", version)
    return under_load(stack, lambda: deploy(stack, version, check=check))


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


def proxy_workers(stack: Stack) -> set[str]:
    """Host PIDs of the proxy's nginx workers (a reload replaces them)."""
    top = docker("top", stack.container("proxy"), "-eo", "pid,args").stdout.splitlines()[1:]
    return {line.split()[0] for line in top if "worker process" in line and "shutting down" not in line}


def test_first_deploy_then_a_new_version_without_failed_requests(stack):
    deploy(stack, "v1")
    assert serving(stack) == {"v1"}
    proxy_before = inspect(stack.container("proxy"))
    workers_before = proxy_workers(stack) if stack.answers["proxy"] == "nginx" else set()
    _, load = deploy_under_load(stack, "v2")
    proxy_after = inspect(stack.container("proxy"))
    # The proxy was reconfigured, never restarted or recreated.
    assert (proxy_after["Id"], proxy_after["State"]["StartedAt"]) == (proxy_before["Id"], proxy_before["State"]["StartedAt"])
    if stack.answers["proxy"] == "nginx":
        # Its configuration unchanged since it started: the switch was a marker file, no reload.
        assert workers_before and proxy_workers(stack) == workers_before
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
        proc, load = deploy_under_load(stack, "v3", check=False)
    finally:
        main.write_text(original)
    assert proc.returncode != 0
    assert "did not become healthy; v2 is still serving" in proc.stderr.strip().splitlines()[-1]
    # Why, in the deploy's own words: the new colour's health check's last output.
    assert re.search(r"v3: app-\w+ did not become healthy \(app-\w+ is unhealthy: its health check said: "
                     r"/\S+ answered 500\)", proc.stderr), proc.stderr[-2000:]
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


# deploy.sh migrates before the strategy or the proxy has any part (scripts/migrate.sh): one
# variant per database runs the failing migration.
MIGRATION_VARIANTS = {"rolling-caddy-mariadb", "blue-green-caddy-postgres"}


def test_a_version_failing_its_migration_never_serves(stack, request):
    variant = request.node.callspec.params["stack"]
    if variant not in MIGRATION_VARIANTS:
        pytest.skip(f"migrations run before the strategy and the proxy: {sorted(MIGRATION_VARIANTS)} run it, one per database")
    broken = stack.project / "migrations" / "0002_broken.sql"
    broken.write_text("SELECT * FROM no_such_table;\n")
    try:
        before = history(stack)
        proc, load = deploy_under_load(stack, "v4", check=False)
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


def test_a_changed_nginx_configuration_is_applied_at_the_next_switch(stack):
    """An edited file of config/nginx/ENV/ (or one a copier update wrote) reaches the running nginx
    with the next switch: a reload, confirmed, under load."""
    if stack.answers["proxy"] != "nginx":
        pytest.skip("Caddy and Traefik read no configuration at a switch: only nginx reloads with one")
    headers = stack.project / "config" / "nginx" / "production" / "security-headers.conf"
    original = headers.read_text()
    curl = ["curl", "-sS", "-o", "/dev/null", "-D", "-", f"http://127.0.0.1:{stack.ports['HTTP_PORT']}/"]
    headers.write_text(original + 'add_header X-Config-Check "applied" always;\n')
    try:
        workers_before = proxy_workers(stack)
        assert "x-config-check" not in run(*curl).stdout.lower(), "nginx read the file before the switch"
        proc, load = under_load(stack, lambda: rollback(stack))
        no_failures(load)
        assert "changed since nginx loaded it: reloading it with the switch" in proc.stderr, proc.stderr
        assert "x-config-check: applied" in run(*curl).stdout.lower()
        assert proxy_workers(stack).isdisjoint(workers_before), "the workers of the old configuration are gone"
    finally:
        headers.write_text(original)


def test_traefik_confirms_a_switch_only_once_it_routes_by_it(stack):
    """Traefik applies a switch a moment after its file changes, and the scripts ask it from the
    host (a docker exec per check costs the requests in flight): the control file carries a probe
    route with a new token, answered through the published HTTP port. Only the file Traefik runs
    echoes its token: another is never confirmed, a rewrite retires the old one, and the route
    answers nothing else."""
    if stack.answers["proxy"] != "traefik":
        pytest.skip("nginx and Caddy read the switch at every request: nothing to confirm")
    if not (stack.project / ".deploy" / "production" / "active-colour").exists():
        deploy(stack, "v1")
    container, colour = stack.container("proxy"), active_colour(stack)
    control = stack.project / ".deploy" / "production" / "proxy" / "upstream.yml"

    def probe(token: str, seconds: int = 1) -> bool:
        # With a proxy setting on the host that leads nowhere: the probe must not follow it.
        env = {**os.environ, "PROXY_SWITCH_TIMEOUT": str(seconds), "http_proxy": "http://127.0.0.1:9"}
        return run("bash", "-c", 'source scripts/lib/common.sh && traefik_probe "$0" "$1"', container, token,
                   cwd=stack.project, check=False, env=env).returncode == 0

    def token_in_file() -> str:
        return re.search(r'X-Deploy-Probe: "([0-9a-f]+)"', control.read_text()).group(1)

    current = token_in_file()
    assert probe(current), control.read_text()
    started = time.monotonic()
    assert not probe("0123456789abcdef01234567")
    assert time.monotonic() - started >= 1, "a token Traefik does not run is waited for, then refused"
    run("bash", "-c", 'source scripts/lib/common.sh && proxy_write production "$0" "$1"', colour, "feedbeef" * 3,
        cwd=stack.project)
    assert probe("feedbeef" * 3, seconds=10)
    assert not probe(current), "the previous file's token is no longer echoed"
    base = f"http://127.0.0.1:{stack.ports['HTTP_PORT']}"
    for url, headers in ((f"{base}/", ["-H", f"X-Deploy-Probe: {'feedbeef' * 3}"]), (f"{base}{stack.answers['health_path']}", [])):
        answer = run("curl", "-sS", "-o", "/dev/null", "-D", "-", *headers, url).stdout.lower()
        assert "x-deploy-probe" not in answer, (url, answer)
    assert serving(stack), "the app still answers through the proxy"


# --- secret rotation (scripts/rotate-secret.sh) -----------------------------------------------------------

# The release traffic, and requests that open a database connection each (the example app's /items).
ROTATION_TRAFFIC = TRAFFIC + [("GET", "/items")] * 2


def rotate(stack: Stack, name: str, *args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    return run(stack.project / "scripts" / "rotate-secret.sh", "production", name, *args, cwd=stack.project, check=check,
               timeout=900, env=env)


def db_accepts(stack: Stack, user: str, password: str) -> bool:
    """Whether the database lets USER in with PASSWORD, asked as the app would: a client of the
    database's image in the serving app container's network, to the database's address there."""
    app = stack.container(app_service(stack))
    ip = address_seen_from(app, stack.container("db"))
    if stack.answers["database"] == "postgres":
        secret, client = f"PGPASSWORD={password}", ["psql", "-X", "-At", "-h", ip, "-U", user, "-d", "app", "-c"]
    else:
        secret, client = f"MYSQL_PWD={password}", ["mariadb", "-h", ip, "-u", user, "--batch", "app", "-e"]
    image = inspect(stack.container("db"))["Config"]["Image"]
    return docker("run", "--rm", "--network", f"container:{app}", "-e", secret, "--entrypoint", client[0], image,
                  *client[1:], "select 1", check=False).returncode == 0


def cache_answers(stack: Stack, password: str) -> str:
    return docker("exec", stack.container("cache"), "sh", "-c", 'REDISCLI_AUTH="$1" redis-cli ping', "-", password,
                  check=False).stdout.strip()


def app_reads(stack: Stack, name: str) -> set[str]:
    """The secret's value as each running app container has it."""
    return {docker("exec", c["Name"], "cat", f"/run/secrets/{name}").stdout for c in stack.containers(app_service(stack))}


def stashed(stack: Stack, name: str) -> list[Path]:
    return sorted((stack.project / "secrets/production/.rotated").glob(f"{name}.*"))


def test_a_rotated_database_password_reaches_the_app_and_the_old_one_is_refused(stack):
    secret = stack.project / "secrets/production/db_app_password"
    old, mode = secret.read_text(), secret.stat().st_mode
    before, versions = history(stack), serving(stack)
    with Load(stack.ports["HTTP_PORT"], requests=ROTATION_TRAFFIC) as load:
        time.sleep(2)
        proc = rotate(stack, "db_app_password")
        time.sleep(3)
    new = secret.read_text()
    assert new != old and len(new) == 48 and secret.stat().st_mode == mode
    assert "rotated secrets/production/db_app_password" in proc.stderr
    # The database knows only the new password; every app replica has it and writes with it.
    assert db_accepts(stack, "app_user", new) and not db_accepts(stack, "app_user", old)
    assert app_reads(stack, "db_app_password") == {new}
    assert all(stack.http("GET", "/items")[0] == 200 for _ in range(12))
    # Nothing else changed: the same version serves, no release was recorded, one colour runs.
    assert serving(stack) == versions and history(stack) == before
    assert stack.containers(app_service(stack, "idle"), all_states=True) == [], "the colour that read the old value stopped"
    [kept] = stashed(stack, "db_app_password")
    assert kept.read_text() == old and oct(kept.stat().st_mode & 0o777) == "0o600"
    # Requests without the database never failed. PostgreSQL and MariaDB hold one password per
    # role: an old replica's new connection between the change and the switch is refused.
    assert [f for f in load.failed if f[1] != "/items"] == [], load.failed[:10]
    refused = sorted(r[0] for r in load.results if r[3][1] == "/items" and not 200 <= r[1] < 300)
    asked = sum(1 for r in load.results if r[3][1] == "/items")
    window = refused[-1] - refused[0] if refused else 0.0
    print(f"rotation of db_app_password ({stack.name}): {len(refused)} of {asked} database requests refused, "
          f"within {window:.1f} s")
    # The window is the fresh colour's start after the role's change plus the switch: 1.2-3.4 s on
    # a quiet machine, 5.3 s once under a CI run's load. Bounded well below the health timeout.
    assert window <= 15, f"database requests were refused over {window:.1f} s ({len(refused)} of {asked})"


def test_a_rotation_that_cannot_start_the_app_puts_the_old_value_back(stack):
    """The fresh replicas cannot be created (a container of another owner holds the name of the
    first one): the old value comes back, in the file and in the database, and users are served."""
    if blue_green(stack):
        pytest.skip("the idle colour's replicas exist here, so no name is free to block; the rolling variants cover it")
    secret = stack.project / "secrets/production/db_app_password"
    old = secret.read_text()
    blocker = f"{stack.name}-{app_service(stack, 'idle')}-1"
    docker("create", "--name", blocker, f"{stack.answers['image_name']}:v2", "true")
    try:
        with Load(stack.ports["HTTP_PORT"], requests=ROTATION_TRAFFIC) as load:
            time.sleep(1)
            proc = rotate(stack, "db_app_password", check=False)
            time.sleep(2)
    finally:
        docker("rm", "--force", blocker)
    assert proc.returncode != 0
    assert "the old value is back (users are still served)" in proc.stderr.strip().splitlines()[-1], proc.stderr
    assert secret.read_text() == old and db_accepts(stack, "app_user", old)
    assert app_reads(stack, "db_app_password") == {old}
    no_failures(load)
    assert len(stashed(stack, "db_app_password")) == 2, "each attempt keeps the value it found"


def test_a_rotated_cache_password_reaches_the_app_without_a_failed_request(stack):
    if stack.answers["cache"] != "redis":
        pytest.skip("no cache in this variant")
    secret = stack.project / "secrets/production/redis_password"
    old = secret.read_text()
    with Load(stack.ports["HTTP_PORT"], requests=ROTATION_TRAFFIC) as load:
        time.sleep(2)
        rotate(stack, "redis_password")
        time.sleep(3)
    new = secret.read_text()
    assert new != old
    # The cache accepted both passwords during the switch, and only the new one after it.
    no_failures(load)
    assert cache_answers(stack, new) == "PONG" and cache_answers(stack, old) != "PONG"
    assert app_reads(stack, "redis_password") == {new}
    assert "hits" in stack.get_json("/")
