"""`copier update` of a running project: a project rendered by the last recorded release, deployed
with data, is updated to HEAD and deployed again through its own scripts. What the CHANGELOG
promises an updating project must hold on a real stack: the data is kept, the app's services of
the old release are replaced, the release history still rolls back, and later deploys lose no
request."""

from __future__ import annotations

import contextlib
import json
import subprocess

import pytest
from copier import run_copy, run_update

from conftest import ROOT, run
from e2e_support import TRAFFIC, Load, Stack, add_slow_route, build_release, deploy_release, docker, healthy, wait_until
from test_update import GIT, RELEASES

pytestmark = pytest.mark.e2e

ANSWERS = dict(project_name="Update e2e", environments=["production"], database="postgres", cache="none",
               monitoring="none", proxy="nginx", tls="none", process_manager="none", app_replicas=2,
               deploy_strategy="rolling")


def git(project, *args: str) -> None:
    subprocess.run([*GIT, *args], cwd=project, check=True, capture_output=True, text=True)


def deploy(stack: Stack, version: str) -> subprocess.CompletedProcess:
    return deploy_release(stack.project, "production", version)


@contextlib.contextmanager
def last_release_stack(tmp_path, answers: dict):
    """(version, stack): a project rendered by the last recorded release and committed, set up for
    production; taken down afterwards, leaving nothing behind."""
    version, commit = RELEASES[0]
    project = tmp_path / "project"
    run_copy(str(ROOT), str(project), vcs_ref=commit, data={**ANSWERS, **answers}, defaults=True, unsafe=True, quiet=True)
    add_slow_route(project)
    git(project, "init", "-q")
    git(project, "add", "-A")
    git(project, "commit", "-qm", f"rendered by {version}")
    stack = Stack(project, "production")
    stack.configure()
    for alias in stack.alias_earlier_pins():
        print(f"{version}'s pin served by the lab's image: {alias}")
    try:
        yield version, stack
    finally:
        stack.down()
        for tag in ("v1", "v2", "v3"):
            docker("image", "rm", "--force", f"{stack.answers['image_name']}:{tag}", check=False)
    assert stack.leftovers() == {"containers": [], "volumes": [], "networks": []}


def update_to_head(project) -> None:
    """`copier update` to HEAD, committed as a user would."""
    run_update(str(project), vcs_ref="HEAD", defaults=True, overwrite=True, unsafe=True, quiet=True)
    git(project, "add", "-A")
    git(project, "commit", "-qm", "copier update")


@pytest.fixture(params=["postgres", "mariadb"])
def released(request, tmp_path, lab):
    with last_release_stack(tmp_path, {"database": request.param, "project_name": f"Update e2e {request.param}"}) as released:
        yield released


def test_a_running_project_of_the_last_release_updates_and_deploys(released):
    version, stack = released
    deploy(stack, "v1")
    assert stack.get_json("/")["version"] == "v1"
    assert stack.http("POST", "/items", {"name": f"written under {version}"})[0] == 201
    before = stack.get_json("/items")["items"]
    services_before = {c["Service"] for c in stack.containers()}

    update_to_head(stack.project)

    proc = deploy(stack, "v2")
    services_after = {c["Service"] for c in stack.containers()}
    if "app" in services_before:
        # A rolling project of a release before the colours: its service app is gone, gracefully.
        assert "stopping the service app of an earlier template version" in proc.stderr
    assert "app" not in services_after and "app-blue" in services_after
    assert {stack.get_json("/")["version"] for _ in range(8)} == {"v2"}
    assert stack.get_json("/items")["items"] == before, "the data of the old release is kept"
    # The deploy gave the existing database its roles: the app now logs in with data access only,
    # and still writes; the migrations' owner role owns what the old release created.
    app_env = json.loads(stack.compose("config", "--format", "json").stdout)["services"]["app-blue"]["environment"]
    assert app_env["DATABASE_USER"] == "app_user"
    assert stack.http("POST", "/items", {"name": "written as app_user"})[0] == 201
    if stack.answers["database"] == "postgres":
        owners = stack.compose("exec", "-T", "db", "psql", "-X", "-At", "-U", "app", "-d", "app", "-c",
                               "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'").stdout.split()
        assert owners == ["app_owner"], owners

    # Later deploys drain: no request lost, whatever kind.
    build_release(stack.project, "production", "v3")
    with Load(stack.ports["HTTP_PORT"], requests=TRAFFIC) as load:
        deploy(stack, "v3")
    assert load.failed == [] and len(load.results) > 50, load.failed[:10]
    # The history written by the old release still rolls back.
    run(stack.project / "scripts" / "rollback.sh", "production", "v1", cwd=stack.project, timeout=900)
    assert {stack.get_json("/")["version"] for _ in range(8)} == {"v1"}


def test_a_blue_green_project_keeps_its_colour_through_the_update_and_a_proxy_restart(tmp_path, lab):
    """A blue-green project of the last release serving from green is updated; its proxy restarts
    before any script of the new version runs (Docker's restart policy, a reboot): nginx still
    routes to green (its upstream.conf, until a marker exists), and the next deploy switches."""
    answers = {"database": "none", "deploy_strategy": "blue-green", "project_name": "Update e2e colours"}
    with last_release_stack(tmp_path, answers) as (_, stack):
        project = stack.project
        deploy(stack, "v1")
        deploy(stack, "v2")
        assert (project / ".deploy/production/active-colour").read_text().strip() == "green"
        assert {stack.get_json("/")["version"] for _ in range(8)} == {"v2"}
        proxy = stack.container("proxy")  # through the old release's scripts, before the update

        update_to_head(project)
        # Restarted by Docker, not by the project's scripts (they would write the marker).
        docker("restart", proxy)
        # `docker restart` returns once the process started, before nginx listens: until then an
        # empty reply (a restart is an outage, whatever the colour).
        wait_until(lambda: healthy(proxy), 60, "the restarted proxy to be healthy", interval=0.25)
        assert not list((project / ".deploy/production/proxy").glob("route-*"))
        assert {stack.get_json("/")["version"] for _ in range(8)} == {"v2"}, "the restarted proxy kept the colour"

        build_release(project, "production", "v3")
        with Load(stack.ports["HTTP_PORT"], requests=TRAFFIC) as load:
            deploy(stack, "v3")
        assert load.failed == [] and len(load.results) > 50, load.failed[:10]
        assert {stack.get_json("/")["version"] for _ in range(8)} == {"v3"}
        assert sorted(p.name for p in (project / ".deploy/production/proxy").glob("route-*")) == ["route-app-blue"]
