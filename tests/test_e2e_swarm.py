"""The Swarm target (answer orchestrators: swarm) on a real three-node Docker Swarm made here by
tests/lab/swarm.sh: each node a dockerd in its own network namespace, a registry (Debian's
docker-registry) that every node pulls from. The rendered project's own scripts do everything, with
DEPLOY_TARGET=swarm in env/production.env: the first deploy, a rolling update under load, a
version failing its health check (Swarm rolls it back by itself), a rollback; then a worker node
dies and the app recovers on the others without anyone acting.

Images: the app is the Go example, built here; PostgreSQL, Redis and nginx are this lab's images
(official or stand-in: the e2e report says which), pushed to the lab registry and named in the env
file (POSTGRES_IMAGE, ...). Where the kernel has no IPsec (SWARM_IPSEC=no, as on this machine: ESP
"function not implemented"), the backend network's encryption is removed from the stack file before
the deploy, and the test says so; everything else runs as rendered. Traffic goes only to the lab's
node addresses."""

from __future__ import annotations

import hashlib
import json
import re
import time

import pytest

from conftest import run
from e2e_support import Load, SwarmLab, docker, wait_until

pytestmark = pytest.mark.e2e

ANSWERS = dict(project_name="Swarm E2E", runtime="go", environments=["production"], database="postgres", cache="redis",
               monitoring="none", proxy="nginx", tls="none", process_manager="none", ci="none", orchestrators=["swarm"],
               app_replicas=2)
STACK = "swarm-e2e-production"
APP = f"{STACK}_app"
# Node 1 is the manager, the edge (proxy) and the data node; 2 and 3 are workers that run app tasks.
EDGE_AND_DATA = 1


@pytest.fixture(scope="module")
def lab_swarm(lab):
    swarm = SwarmLab.up(3)
    try:
        yield swarm
    finally:
        swarm.down()


@pytest.fixture(scope="module")
def project(copie_session, lab_swarm):
    result = copie_session.copy(extra_answers=ANSWERS)
    assert result.exit_code == 0, result.exception
    project = result.project_dir
    run("git", "init", "-q", cwd=project)
    lab_swarm.target(project, node=EDGE_AND_DATA)
    run("git", "add", "-A", cwd=project)
    run("git", "-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-qm", "rendered", cwd=project)
    for version in ("v1", "v2"):
        run(project / "scripts" / "build.sh", "production", version, cwd=project, timeout=900)
    yield project
    for version in ("v1", "v2", "v3"):
        docker("image", "rm", "--force", f"{lab_swarm.registry}/swarm-e2e:{version}", check=False)


def deploy(project, version: str, check: bool = True):
    return run(project / "scripts" / "deploy.sh", "production", version, cwd=project, check=check, timeout=900)


def rollback(project, *args: str, check: bool = True):
    return run(project / "scripts" / "rollback.sh", "production", *args, cwd=project, check=check, timeout=900)


def history(project) -> list[tuple[str, str]]:
    lines = (project / ".deploy" / "production" / "releases.tsv").read_text().splitlines()[1:]
    return [(line.split("\t")[1], line.split("\t")[4]) for line in lines]


def serving(swarm: SwarmLab) -> set[str]:
    """Versions answering through the proxy on the edge node (asked often enough to reach every replica)."""
    import urllib.request

    found = set()
    for _ in range(12):
        with urllib.request.urlopen(f"http://{swarm.edge}:8080/", timeout=10) as response:
            found.add(json.load(response)["version"])
    return found


def under_load(swarm: SwarmLab, action):
    with Load(8080, host=swarm.edge, requests=[("GET", "/")] * 3 + [("POST", "/")]) as load:
        time.sleep(2)
        started = time.monotonic()
        result = action()
        seconds = time.monotonic() - started
        time.sleep(3)
    assert len(load.results) > 50, "the load ran"
    return result, load, seconds


def test_first_deploy_runs_the_stack_across_nodes(project, lab_swarm):
    deploy(project, "v1")
    assert serving(lab_swarm) == {"v1"}
    tasks = lab_swarm.tasks(APP)
    assert len(tasks) == 2 and all(t["CurrentState"].startswith("Running") for t in tasks)
    assert len({t["Node"] for t in tasks}) == 2, f"the replicas are spread over two nodes: {tasks}"
    # The stateful services and the proxy where their labels put them; the jobs ran.
    for service in ("db", "cache", "proxy"):
        assert {t["Node"] for t in lab_swarm.tasks(f"{STACK}_{service}")} == {f"node{EDGE_AND_DATA}"}, service
    # The jobs completed (a deploy waits for them before the app; its second stack deploy, with the
    # new app, runs them again: both are idempotent).
    def jobs_completed() -> bool:
        jobs = lab_swarm.docker("service", "ls", "--filter", f"name={STACK}_", "--format", "{{.Name}} {{.Replicas}}").stdout
        return f"{STACK}_migrate 0/1 (1/1 completed)" in jobs and f"{STACK}_db-roles 0/1 (1/1 completed)" in jobs

    wait_until(jobs_completed, 120, "the migrate and db-roles jobs completed")
    roles_log = lab_swarm.docker("service", "logs", "--raw", f"{STACK}_db-roles").stdout
    assert "app_owner, app_user, app_exporter and app_backup are in place" in roles_log, roles_log[-2000:]
    # By digest from the registry, with the content-versioned secrets of secrets/production/.
    spec = json.loads(lab_swarm.docker("service", "inspect", APP).stdout)[0]["Spec"]["TaskTemplate"]["ContainerSpec"]
    assert spec["Image"].startswith(f"{lab_swarm.registry}/swarm-e2e:v1@sha256:")
    assert {s["SecretName"].rsplit("-", 1)[0] for s in spec["Secrets"]} == {
        f"{STACK}-db_app_password", f"{STACK}-redis_password"}
    assert spec["ReadOnly"] and spec["CapabilityDrop"] == ["ALL"] and spec["User"] == "10001:10001"
    assert history(project) == [("v1", "deploy")]


def test_a_rolling_update_under_load_fails_no_request(project, lab_swarm):
    _, load, seconds = under_load(lab_swarm, lambda: deploy(project, "v2"))
    assert load.failed == [], f"{len(load.failed)} failed of {len(load.results)}: {load.failed[:10]}"
    assert load.versions() == {"v1", "v2"} and serving(lab_swarm) == {"v2"}
    assert {t["Image"].split("@")[0] for t in lab_swarm.tasks(APP)} == {f"{lab_swarm.registry}/swarm-e2e:v2"}
    assert history(project)[-1] == ("v2", "deploy") and "APP_VERSION=v2" in (project / "env/production.env").read_text()
    # A backup before the migrations, recorded with the release (the first deploy had no data).
    backups = [line.split("\t")[3] for line in (project / ".deploy/production/releases.tsv").read_text().splitlines()[1:]]
    assert backups[0] == "-" and (project / "backups" / "production" / backups[-1]).is_dir()
    print(f"swarm rolling update of 2 replicas: {seconds:.1f} s, {len(load.results)} requests, 0 failed")


def test_a_version_failing_its_health_check_is_rolled_back_by_swarm(project, lab_swarm):
    main = project / "main.go"
    original = main.read_text()
    broken = original.replace('writeJSON(w, 200, map[string]string{"status": "ok"})',
                              'writeJSON(w, 500, map[string]string{"status": "broken"})')
    assert broken != original
    main.write_text(broken)
    try:
        run(project / "scripts" / "build.sh", "production", "v3", cwd=project, timeout=900)
    finally:
        main.write_text(original)
    before = history(project)
    proc, load, seconds = under_load(lab_swarm, lambda: deploy(project, "v3", check=False))
    assert proc.returncode != 0
    assert "Swarm rolled the app back to v2" in proc.stderr.strip().splitlines()[-1], proc.stderr[-2000:]
    # Why, before it: each task of v3 that stopped, its last health check (the app answered 500)
    # read from its node's daemon, and the lines it logged.
    why = proc.stderr[proc.stderr.index("  task "):]
    assert re.match(r"  task \w{12} \(\S+_app\.\d+ on node\d\): \w+", why), proc.stderr[-2000:]
    assert re.search(r"^    last health check: exit 1: .*500", why, re.M), why
    assert "(production, version v3)" in why, why
    assert load.failed == [], f"{len(load.failed)} failed of {len(load.results)}: {load.failed[:10]}"
    assert load.versions() == {"v2"}, "no user request reached the broken version"
    assert serving(lab_swarm) == {"v2"} and history(project) == before
    print(f"swarm automatic rollback of a failing version: {seconds:.1f} s, 0 failed")


def test_rollback_returns_the_previous_release_by_digest(project, lab_swarm):
    released = json.loads(lab_swarm.docker("service", "inspect", APP).stdout)[0]
    v1_digest = next(line.split("\t")[2] for line in (project / ".deploy/production/releases.tsv").read_text().splitlines()
                     if line.split("\t")[1] == "v1")
    _, load, seconds = under_load(lab_swarm, lambda: rollback(project))
    assert load.failed == [], f"{len(load.failed)} failed of {len(load.results)}: {load.failed[:10]}"
    assert serving(lab_swarm) == {"v1"}
    assert {t["Image"] for t in lab_swarm.tasks(APP)} == {f"{lab_swarm.registry}/swarm-e2e:v1@{v1_digest}"}
    assert history(project)[-1] == ("v1", "rollback")
    assert released["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"].split("@")[0].endswith(":v2")
    print(f"swarm rollback of 2 replicas: {seconds:.1f} s, 0 failed")


def test_rollback_refuses_bad_arguments_before_touching_the_swarm(project, lab_swarm):
    before = lab_swarm.docker("service", "inspect", "--format", "{{.Version.Index}}", APP).stdout
    for args, reason in ((("--restore-db",), "unknown option --restore-db"), (("v9",), "v9 was never released")):
        proc = rollback(project, *args, check=False)
        assert proc.returncode != 0 and reason in proc.stderr.strip().splitlines()[-1], proc.stderr
    assert lab_swarm.docker("service", "inspect", "--format", "{{.Version.Index}}", APP).stdout == before


def db_container(swarm: SwarmLab) -> str:
    return swarm.docker("ps", "--quiet", "--filter", f"label=com.docker.swarm.service.name={STACK}_db",
                        node=EDGE_AND_DATA).stdout.strip()


def psql(swarm: SwarmLab, sql: str) -> str:
    return swarm.docker("exec", db_container(swarm), "psql", "-X", "-At", "-U", "app", "-d", "app", "-c", sql,
                        node=EDGE_AND_DATA).stdout.strip()


def test_a_backup_taken_from_the_swarm_verifies_and_restores(project, lab_swarm):
    """backup.sh, verify-backup.sh and restore.sh reach the database task on its node (SWARM_NODE_HOST)."""
    psql(lab_swarm, "CREATE TABLE items (id int PRIMARY KEY); INSERT INTO items SELECT generate_series(1, 3)")
    backup = run(project / "scripts" / "backup.sh", "production", cwd=project, timeout=600).stdout.strip().splitlines()[-1]
    psql(lab_swarm, "INSERT INTO items VALUES (4)")
    run(project / "scripts" / "verify-backup.sh", "production", backup, cwd=project, timeout=600)
    with Load(8080, host=lab_swarm.edge, threads=2) as load:
        run(project / "scripts" / "restore.sh", "production", backup, "--confirm-production", cwd=project, timeout=600)
    assert psql(lab_swarm, "SELECT count(*) FROM items") == "3"
    assert serving(lab_swarm) == {"v1"} and len(lab_swarm.tasks(APP)) == 2
    assert load.succeeded, "the app answered around the restore (it stops while the databases swap)"


def test_migrate_takes_a_backup_and_runs_the_job_again(project, lab_swarm):
    def iteration() -> int:
        return int(lab_swarm.docker("service", "inspect", "--format", "{{.JobStatus.JobIteration.Index}}", f"{STACK}_migrate").stdout)

    before = iteration()
    backup = run(project / "scripts" / "migrate.sh", "production", cwd=project, timeout=600).stdout.strip().splitlines()[-1]
    assert (project / "backups" / "production" / backup / "SHA256SUMS").exists()
    assert iteration() > before


def test_a_rotated_secret_reaches_the_app_without_a_failed_request(project, lab_swarm):
    """scripts/rotate-secret.sh on a Swarm: the new value is a new Swarm secret (its content hash in
    the name), and deploying the serving version again rolls every service that reads it, the app
    one task at a time. The old value is kept for the way back."""
    secret = project / "secrets" / "production" / "redis_password"
    old = secret.read_text()
    rotated = "rotated-" + old.strip()[:24]
    given = project / "new-value"
    given.write_text(rotated + "\nignored second line\n")
    proc, load, _ = under_load(lab_swarm, lambda: run(project / "scripts" / "rotate-secret.sh", "production", "redis_password",
                                                         "--from", given, cwd=project, timeout=900))
    assert "rotated secrets/production/redis_password" in proc.stderr
    assert load.failed == [], f"{len(load.failed)} failed of {len(load.results)}: {load.failed[:10]}"
    assert secret.read_text() == rotated
    [kept] = (project / "secrets/production/.rotated").glob("redis_password.*")
    assert kept.read_text() == old
    for task in lab_swarm.tasks(APP):
        node = int(task["Node"].removeprefix("node"))
        container = lab_swarm.docker("ps", "--quiet", "--filter", f"label=com.docker.swarm.task.id={task['ID']}", node=node).stdout.strip()
        assert lab_swarm.docker("exec", container, "cat", "/run/secrets/redis_password", node=node).stdout == rotated
    spec = json.loads(lab_swarm.docker("service", "inspect", APP).stdout)[0]["Spec"]["TaskTemplate"]["ContainerSpec"]
    version = hashlib.sha256(rotated.encode()).hexdigest()[:12]
    assert f"{STACK}-redis_password-{version}" in {s["SecretName"] for s in spec["Secrets"]}


def test_a_dead_worker_node_is_replaced_without_anyone_acting(project, lab_swarm):
    workers = [int(t["Node"].removeprefix("node")) for t in lab_swarm.tasks(APP) if t["Node"] != f"node{EDGE_AND_DATA}"]
    assert workers, "an app task runs on a worker"
    victim = workers[0]
    with Load(8080, host=lab_swarm.edge, threads=4) as load:
        time.sleep(2)
        killed = time.monotonic()
        lab_swarm.kill(victim)

        def recovered() -> bool:
            tasks = [t for t in lab_swarm.tasks(APP) if t["Node"] != f"node{victim}"]
            return len(tasks) == 2 and all(t["CurrentState"].startswith("Running") for t in tasks)

        wait_until(recovered, 120, f"two app tasks running on the nodes left after node{victim} died", interval=0.5)
        seconds = time.monotonic() - killed
        time.sleep(3)
    after = load.failures(since=killed)
    # A request in flight on the dying node cannot be saved: at most one per client thread.
    assert len(after) <= 4, f"{len(after)} failed requests after node{victim} died: {after[:10]}"
    assert serving(lab_swarm) == {"v1"}
    down = lab_swarm.docker("node", "ls", "--format", "{{.Hostname}} {{.Status}}").stdout
    assert f"node{victim} Down" in down, down
    print(f"swarm node loss: recovered in {seconds:.1f} s, {len(after)} failed of "
          f"{sum(1 for r in load.results if r[0] >= killed)} requests")
