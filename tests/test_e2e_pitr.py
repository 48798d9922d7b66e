"""Point-in-time recovery on the Compose target, for PostgreSQL and MariaDB, against real
containers: base backups, the archive (PostgreSQL's WAL, which the server archives; MariaDB's
binary log, which db-archive streams), `scripts/restore.sh ENV --to TIME|latest` and the scheduled
replay (verify-archive.sh). Every script is the rendered project's own."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from conftest import run
from e2e_support import Stack, docker

pytestmark = pytest.mark.e2e

DATABASES = ["postgres", "mariadb"]
ANSWERS = dict(environments=["production"], monitoring="none", process_manager="none", proxy="nginx", tls="none",
               cache="none", app_replicas=1)
CONFIRM = "--confirm-production"
# The acknowledged writes a lost database volume may cost (the bound); PostgreSQL's rendered
# default archive timeout is 30 s, MariaDB's binary log is streamed as it is written.
RPO_SECONDS = 60
# The meta.env key of the first archived file a base backup needs.
START_KEY = {"postgres": "START_WAL", "mariadb": "START_BINLOG"}
LIVE_CLUSTER = {"postgres": "SELECT system_identifier FROM pg_control_system()", "mariadb": "SELECT id FROM mysql.pitr_cluster"}


@pytest.fixture(scope="module", params=DATABASES)
def stack(request, copie_session, lab):
    stack = Stack.rendered(copie_session, {**ANSWERS, "database": request.param, "project_name": f"Pitr {request.param}"})
    stack.up()
    yield stack
    stack.down()
    assert stack.leftovers() == {"containers": [], "volumes": [], "networks": []}


def script(stack: Stack, name: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(stack.project / "scripts" / name, *args, cwd=stack.project, check=check, timeout=900, env=dict(os.environ))


def sql(stack: Stack, statement: str, db: str = "app") -> str:
    """A statement as the administrator, inside the db container; tab-separated rows."""
    if stack.answers["database"] == "postgres":
        cmd = ["psql", "-X", "-q", "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-U", "app", "-d", db, "-c", statement]
    else:
        cmd = ["sh", "-c", 'MYSQL_PWD="$(cat /run/secrets/db_root_password)" exec mariadb -uroot --batch --raw --skip-column-names "$1" -e "$0"',
               statement, "mysql" if db == "postgres" else db]
    return stack.compose("exec", "-T", "db", *cmd).stdout.strip()


def databases(stack: Stack) -> list[str]:
    if stack.answers["database"] == "postgres":
        return sql(stack, "SELECT datname FROM pg_database ORDER BY 1", db="postgres").split()
    return sql(stack, "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA ORDER BY 1", db="postgres").split()


def items(stack: Stack) -> list[str]:
    return sql(stack, "SELECT name FROM items ORDER BY id").splitlines()


def add(stack: Stack, *names: str) -> None:
    for name in names:
        assert stack.http("POST", "/items", {"name": name})[0] == 201


def base_dir(stack: Stack) -> Path:
    return stack.project / "backups" / "production" / "base"


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_refusals_change_nothing(stack):
    add(stack, "before refusals")
    before, dbs = items(stack), databases(stack)
    cases = [
        (["--to"], "--to needs a time"),
        (["--to", "yesterday", CONFIRM], "'yesterday' is not a time"),
        (["--to", "2026-13-40T99:00:00Z", CONFIRM], "is not a time"),
        (["--to", "2999-01-01T00:00:00Z", CONFIRM], "is in the future"),
        (["--to", "latest"], f"run again with {CONFIRM}"),
        (["--to", "latest", CONFIRM], "no base backup in backups/production/base yet: run scripts/base-backup.sh"),
    ]
    for args, message in cases:
        proc = script(stack, "restore.sh", "production", *args, check=False)
        assert proc.returncode != 0, args
        assert message in proc.stderr.strip().splitlines()[-1], (args, proc.stderr)
    assert (items(stack), databases(stack)) == (before, dbs)
    assert not any(name.startswith(("app_restore_", "app_pre_restore_")) for name in dbs)
    assert docker("ps", "-a", "--filter", f"name={stack.name}-recover", "--format", "{{.Names}}").stdout.strip() == ""


def test_restore_to_a_time_before_a_destructive_statement(stack):
    base = script(stack, "base-backup.sh", "production").stdout.strip().splitlines()[-1]
    made = [base_dir(stack) / base, *(base_dir(stack) / base).iterdir()]
    assert {oct(path.stat().st_mode & 0o077) for path in made} == {"0o0"}, "a base backup is its owner's only"
    add(stack, "after base 1", "after base 2", "quote ' and \\ backslash")
    time.sleep(1.1)
    target = utc_now()
    existed = items(stack)
    time.sleep(1.1)
    sql(stack, "DELETE FROM items")  # the mistake
    add(stack, "after the mistake")
    assert items(stack) == ["after the mistake"]

    proc = script(stack, "restore.sh", "production", "--to", target, CONFIRM)
    assert items(stack) == existed, proc.stderr
    assert "after base 1" in existed and "before refusals" in existed
    # The app serves the recovered rows, and the replaced database is kept.
    assert [row["name"] for row in stack.get_json("/items")["items"]] == existed
    assert any(name.startswith("app_pre_restore_") for name in databases(stack))
    kept = next(name for name in databases(stack) if name.startswith("app_pre_restore_"))
    assert sql(stack, "SELECT name FROM items", db=kept).splitlines() == ["after the mistake"]
    # The app still logs in as its own role and writes.
    add(stack, "after the restore")


def test_a_time_after_the_last_commit_recovers_that_state(stack):
    """PostgreSQL stops a recovery that reaches the end of the archive before a commit after the
    target time; the state at that time is then the end of the archive, which is replayed whole.
    (A background commit, e.g. autoanalyze, after the time lets the target be reached instead: the
    rows are the same either way.)"""
    add(stack, "the last write")
    time.sleep(1.1)
    target = utc_now()
    existed = items(stack)
    time.sleep(1.1)
    proc = script(stack, "restore.sh", "production", "--to", target, CONFIRM)
    print("replayed the whole archive" if "replaying all of it" in proc.stderr else "the target was reached")
    assert items(stack) == existed


def test_a_tampered_base_backup_is_refused(stack):
    latest = base_dir(stack) / os.readlink(base_dir(stack) / "latest")
    meta = latest / "meta.env"
    original = meta.read_text()
    before = items(stack)
    try:
        key = START_KEY[stack.answers["database"]]
        meta.write_text(original.replace(f"{key}=", f"{key}=0"))
        proc = script(stack, "restore.sh", "production", "--to", "latest", CONFIRM, check=False)
        assert proc.returncode != 0 and "fails its checksum" in proc.stderr, proc.stderr
        assert items(stack) == before
    finally:
        meta.write_text(original)


def test_scheduled_backup_replays_the_archive(stack):
    add(stack, "before the scheduled backup")
    bases = set(os.listdir(base_dir(stack)))
    script(stack, "scheduled-backup.sh", "production")
    new = sorted(set(os.listdir(base_dir(stack))) - bases)
    assert len(new) == 1, new
    assert (base_dir(stack) / new[0] / "verified").is_file()
    metrics = (stack.project / "metrics" / "production" / "backup.prom").read_text()
    assert 'pitr_last_verify_ok{environment="production"} 1' in metrics
    assert 'backup_last_run_ok{environment="production"} 1' in metrics


class Writer:
    """Writes rows through the app, one after another, and notes when each was acknowledged."""

    def __init__(self, stack: Stack):
        self.stack, self.acked, self.stop = stack, {}, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            name = f"w-{n}"
            if self.stack.http("POST", "/items", {"name": name})[0] == 201:
                self.acked[name] = time.time()
            time.sleep(0.05)

    def __enter__(self) -> "Writer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(30)


def test_a_lost_database_volume_is_recovered_to_the_latest_archived_write(stack):
    with Writer(stack) as writer:
        time.sleep(45)  # past the archive timeout: some of these writes are archived only by it
        container = stack.container("db")
        docker("kill", container)
        lost_at = time.time()
    stack.compose("rm", "--force", "--stop", "db")
    docker("volume", "rm", f"{stack.name}_db-data")
    # (The archive's volume stays: db-wal or db-binlog.)
    stack.up()
    assert items(stack) == [], "a new, empty database"

    proc = script(stack, "restore.sh", "production", "--to", "latest", CONFIRM)
    restored = set(items(stack))
    acked = writer.acked
    missing = {name: at for name, at in acked.items() if name not in restored}
    recovered = len(acked) - len(missing)
    print(f"acknowledged {len(acked)} writes in 45 s, recovered {recovered}, missing {len(missing)}"
          f" (the last {lost_at - min(missing.values(), default=lost_at):.1f} s before the loss)")
    assert recovered > 0 and "before the scheduled backup" in restored
    assert all(lost_at - at <= RPO_SECONDS for at in missing.values()), sorted(missing.items())[:3]
    # No hole: every write up to the last recovered one is there.
    order = sorted(acked, key=acked.get)
    last = max(i for i, name in enumerate(order) if name in restored)
    assert all(name in restored for name in order[:last + 1])
    # Later recoveries start from the new cluster: the restore made a base backup of it.
    live = sql(stack, LIVE_CLUSTER[stack.answers["database"]], db="postgres")
    clusters = {(base_dir(stack) / b / "meta.env").read_text().split("SYSTEM_ID=")[1].split()[0]
                for b in os.listdir(base_dir(stack)) if b[0].isdigit()}
    assert live in clusters, proc.stderr
    add(stack, "after the recovery")
