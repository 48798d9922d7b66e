"""Data operations against real databases, for PostgreSQL and MariaDB: backup and restore round
trip, verification that catches damage, faults during backup and migration, retention over a
simulated series of days, and the off-host copy. Every script is the rendered project's own."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import run
from e2e_support import Stack, address_seen_from, docker, inspect

pytestmark = pytest.mark.e2e

DATABASES = ["postgres", "mariadb"]
ANSWERS = dict(environments=["production"], monitoring="none", process_manager="none", proxy="nginx", tls="none",
               cache="none", app_replicas=1)


@pytest.fixture(scope="module", params=DATABASES)
def stack(request, copie_session, lab):
    """A running production stack per database, shared by the tests of this module."""
    stack = Stack.rendered(copie_session, {**ANSWERS, "database": request.param, "project_name": f"Data {request.param}"})
    stack.up()
    yield stack
    stack.down()
    assert stack.leftovers() == {"containers": [], "volumes": [], "networks": []}


def script(stack: Stack, name: str, *args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    return run(stack.project / "scripts" / name, *args, cwd=stack.project, check=check, timeout=900,
               env={**os.environ, **(env or {})})


def backup(stack: Stack, env: dict | None = None) -> str:
    proc = script(stack, "backup.sh", "production", env=env)
    return proc.stdout.strip().splitlines()[-1]


def sql(stack: Stack, statement: str) -> str:
    """A statement as the app's database user, inside the db container; tab-separated rows."""
    if stack.answers["database"] == "postgres":
        cmd = ["psql", "-X", "-q", "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-U", "app", "-d", "app", "-c", statement]
    else:
        cmd = ["sh", "-c", 'MYSQL_PWD="$(cat /run/secrets/db_root_password)" exec mariadb -uroot --batch --skip-column-names app -e "$0"', statement]
    return stack.compose("exec", "-T", "db", *cmd).stdout


def table_bytes(stack: Stack) -> str:
    return sql(stack, "SELECT id, name FROM items ORDER BY id")


def backups_dir(stack: Stack) -> Path:
    return stack.project / "backups" / "production"


def latest(stack: Stack) -> str | None:
    link = backups_dir(stack) / "latest"
    return os.readlink(link) if link.is_symlink() else None


NAMES = ["plain", "quote ' and \\\\ backslash", "tab\there", "ünïcödé ✓", "percent % and $dollar", "x" * 200]


def test_round_trip_restores_every_byte(stack):
    for name in NAMES:
        assert stack.http("POST", "/items", {"name": name})[0] == 201
    before = table_bytes(stack)
    before_api = stack.http("GET", "/items")[1]
    backup_id = backup(stack)
    made = [backups_dir(stack) / backup_id, *(backups_dir(stack) / backup_id).iterdir()]
    assert {oct(path.stat().st_mode & 0o077) for path in made} == {"0o0"}, "a backup is its owner's only"
    # Change, delete and add after the backup.
    sql(stack, "UPDATE items SET name = 'changed' WHERE id = (SELECT min_id FROM (SELECT MIN(id) AS min_id FROM items) m)")
    sql(stack, "DELETE FROM items WHERE name LIKE 'percent%'")
    assert stack.http("POST", "/items", {"name": "added after the backup"})[0] == 201
    assert table_bytes(stack) != before

    refused = script(stack, "restore.sh", "production", backup_id, check=False)
    assert refused.returncode != 0 and "--confirm-production" in refused.stderr
    script(stack, "restore.sh", "production", backup_id, "--confirm-production")
    assert table_bytes(stack) == before
    assert stack.http("GET", "/items")[1] == before_api
    # The restored tables belong to the owner role, and the app's role may write them.
    assert stack.http("POST", "/items", {"name": "written after the restore"})[0] == 201
    sql(stack, "DELETE FROM items WHERE name = 'written after the restore'")
    # The data it replaced is kept, not dropped.
    if stack.answers["database"] == "postgres":
        kept = sql(stack, "SELECT datname FROM pg_database WHERE datname LIKE 'app_pre_restore_%'")
    else:
        kept = sql(stack, "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE 'app_pre_restore_%'")
    assert kept.strip()


def _copy_backup(stack: Stack, backup_id: str, target: Path) -> Path:
    """A private BACKUP_DIR holding one copy of a backup, to damage."""
    shutil.copytree(backups_dir(stack) / backup_id, target / backup_id)
    os.symlink(backup_id, target / "latest")
    return target / backup_id


DAMAGES = ["flipped byte", "truncated", "rows removed, checksums recomputed", "rows removed, checksums recomputed and re-signed",
           "signature removed"]


@pytest.mark.parametrize("damage", DAMAGES)
def test_verification_catches_damage(stack, tmp_path, damage):
    sql(stack, "INSERT INTO items (name) VALUES ('to be removed from a copy of the dump')")
    backup_id = backup(stack)
    ok = script(stack, "verify-backup.sh", "production", backup_id)
    assert "verified" in ok.stderr and (backups_dir(stack) / backup_id / "verified").exists()

    copy = _copy_backup(stack, backup_id, tmp_path)
    dump = copy / "dump.sql.gz"
    data = bytearray(dump.read_bytes())
    if damage == "flipped byte":
        data[len(data) // 2] ^= 0xFF
        dump.write_bytes(bytes(data))
    elif damage == "truncated":
        dump.write_bytes(bytes(data[: len(data) // 2]))
    elif damage == "signature removed":
        (copy / "SHA256SUMS.sig").unlink()
    else:
        import gzip

        lines = gzip.decompress(bytes(data)).decode().splitlines(keepends=True)
        # Every row of items goes: PostgreSQL's COPY block, MariaDB's INSERT statements (rows on the
        # INSERT's line, or one per line after it up to the one ending the statement).
        kept, in_items, end = [], False, None
        for line in lines:
            if line.startswith("COPY public.items "):
                in_items, end = True, "\\.\n"
            elif line.startswith("INSERT INTO `items`"):
                in_items, end = not line.endswith(";\n"), None
            elif in_items:
                in_items = not (line == end if end else line.endswith(";\n"))
            else:
                kept.append(line)
        dump.write_bytes(gzip.compress("".join(kept).encode()))
        run("bash", "-c", "sha256sum dump.sql.gz counts.tsv meta.env > SHA256SUMS", cwd=copy)
        if damage.endswith("re-signed"):  # by someone holding the key: only the restore test catches it
            key = stack.project / "secrets" / "production" / "backup_signing_key"
            run("openssl", "pkeyutl", "-sign", "-rawin", "-inkey", str(key), "-in", "SHA256SUMS", "-out", "SHA256SUMS.sig", cwd=copy)
    proc = script(stack, "verify-backup.sh", "production", backup_id,
                  env={"BACKUP_DIR": str(tmp_path), "BACKUP_METRICS_DIR": str(tmp_path / "metrics")}, check=False)
    assert proc.returncode != 0
    reason = {"flipped byte": "checksum", "truncated": "checksum", "rows removed, checksums recomputed": "signature check",
              "rows removed, checksums recomputed and re-signed": "row counts differ", "signature removed": "no signature"}
    assert reason[damage] in proc.stderr.splitlines()[-1], proc.stderr
    if damage in ("rows removed, checksums recomputed", "signature removed"):
        # restore refuses it too, before it touches anything.
        rows = sql(stack, "SELECT COUNT(*) FROM items")
        refused = script(stack, "restore.sh", "production", backup_id, "--confirm-production",
                         env={"BACKUP_DIR": str(tmp_path)}, check=False)
        assert refused.returncode != 0 and reason[damage] in refused.stderr.splitlines()[-1], refused.stderr
        assert "loading" not in refused.stderr and sql(stack, "SELECT COUNT(*) FROM items") == rows
    assert (copy / "verify-failed").exists() and not (copy / "verified").exists()
    assert 'backup_last_verify_ok{environment="production"} 0' in (tmp_path / "metrics" / "backup.prom").read_text()


def test_encrypted_backup_needs_the_right_key(stack, tmp_path):
    key, wrong = tmp_path / "key", tmp_path / "wrong"
    key.write_text("correct horse battery staple")
    wrong.write_text("not the key")
    backup_id = backup(stack, env={"BACKUP_KEY_FILE": str(key)})
    meta = (backups_dir(stack) / backup_id / "meta.env").read_text()
    assert "ENCRYPTED=yes" in meta and "DUMP=dump.sql.gz.gpg" in meta
    raw = (backups_dir(stack) / backup_id / "dump.sql.gz.gpg").read_bytes()
    assert b"CREATE TABLE" not in raw and raw[:2] != b"\x1f\x8b"
    script(stack, "verify-backup.sh", "production", backup_id, env={"BACKUP_KEY_FILE": str(key)})
    proc = script(stack, "verify-backup.sh", "production", backup_id, env={"BACKUP_KEY_FILE": str(wrong)}, check=False)
    assert proc.returncode != 0 and "does not load" in proc.stderr.splitlines()[-1]
    proc = script(stack, "verify-backup.sh", "production", backup_id, env={"BACKUP_KEY_FILE": ""}, check=False)
    assert proc.returncode != 0 and "is encrypted and no key is set" in proc.stderr
    assert "throwaway" not in proc.stderr, "a missing key is found before any database starts"


def _fill(stack: Stack, rows: int) -> None:
    """Rows of poorly compressible text, so that a dump takes a few seconds and some megabytes."""
    if stack.answers["database"] == "postgres":
        sql(stack, f"INSERT INTO items (name) SELECT md5(random()::text) || md5(random()::text) FROM generate_series(1, {rows})")
    else:
        sql(stack, f"INSERT INTO items (name) SELECT CONCAT(MD5(RAND()), MD5(RAND())) FROM seq_1_to_{rows}")


def test_database_killed_mid_backup_leaves_no_new_latest(stack):
    first = backup(stack)
    before = sorted(p.name for p in backups_dir(stack).iterdir())
    _fill(stack, 600_000)
    proc = subprocess.Popen([str(stack.project / "scripts" / "backup.sh"), "production"], cwd=stack.project,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Kill the database once the dump is being written.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(backups_dir(stack).glob(".incomplete-*/dump.sql.gz")):
        time.sleep(0.05)
    assert list(backups_dir(stack).glob(".incomplete-*/dump.sql.gz")), "the dump never started"
    docker("kill", stack.container("db"))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0, out
    assert "no backup was made" in err.strip().splitlines()[-1]
    assert latest(stack) == first
    assert sorted(p.name for p in backups_dir(stack).iterdir()) == before, "nothing new, nothing half-written"
    script(stack, "verify-backup.sh", "production", first)
    stack.compose("up", "--detach", "--wait", "db")
    sql(stack, "DELETE FROM items WHERE LENGTH(name) = 64")


def test_backup_under_writes_counts_the_rows_it_dumped(stack):
    """The app keeps writing while a backup runs: the row counts stored with the backup are those of
    the snapshot the dump read (restore and verification compare the loaded rows with them)."""
    _fill(stack, 300_000)
    stop, written = threading.Event(), []

    def writer() -> None:
        while not stop.is_set():
            if stack.http("POST", "/items", {"name": f"during backup {len(written)}"})[0] == 201:
                written.append(time.monotonic())

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(0.5)
        started = time.monotonic()
        backup_id = backup(stack)
        ended = time.monotonic()
        time.sleep(0.5)
    finally:
        stop.set()
        thread.join()
    try:
        assert sum(started < at < ended for at in written) >= 5, "the app wrote while the backup ran"
        counts = dict(line.split("\t") for line in (backups_dir(stack) / backup_id / "counts.tsv").read_text().splitlines())
        assert int(counts["items"]) < int(sql(stack, "SELECT COUNT(*) FROM items")), "writes after the snapshot are not in it"
        script(stack, "verify-backup.sh", "production", backup_id)
    finally:
        sql(stack, "DELETE FROM items WHERE LENGTH(name) = 64 OR name LIKE 'during backup %'")


def test_the_dump_in_the_db_container_counts_what_it_dumped_and_names_a_failure(stack, tmp_path):
    """db_dump_counted where Swarm and Kubernetes run it, in the db container itself (DB_DUMP_EXEC
    empty; on Compose MariaDB's runs in db-backup): the counts it stores are those of the dump it
    wrote, and a failing dump returns 1 with the reason, not a backup."""
    work = tmp_path / "work"
    work.mkdir()
    lib = stack.project / "scripts" / "lib"
    dump = f"""set -Eeuo pipefail
        source {lib}/common.sh; source {lib}/db.sh
        db_use_service production
        DB_DUMP_EXEC=()
        DB_NAME=${{1:-$DB_NAME}}
        db_dump_counted {work} >{work}/dump.sql.gz"""
    run("bash", "-c", dump, cwd=stack.project)
    stored = (work / "counts.tsv").read_text()
    assert "items\t" in stored and stored.splitlines() == sorted(stored.splitlines())
    if stack.answers["database"] == "mariadb":
        recount = run("bash", "-c", f"source {lib}/common.sh; source {lib}/db.sh; gzip -dc {work}/dump.sql.gz | count_dump_rows")
        assert recount.stdout == stored
    else:
        assert run("gzip", "-t", work / "dump.sql.gz").returncode == 0
    assert dict(line.split("\t") for line in stored.splitlines())["items"] == sql(stack, "SELECT COUNT(*) FROM items").strip()
    failed = run("bash", "-c", dump, "dump", "no_such_database", cwd=stack.project, check=False)
    assert failed.returncode == 1 and "no_such_database" in (work / ".dump-error").read_text(), failed.stderr


def test_full_disk_fails_cleanly(stack, tmp_path):
    target = tmp_path / "small"
    target.mkdir()
    run("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", target)
    try:
        first = backup(stack, env={"BACKUP_DIR": str(target)})
        _fill(stack, 200_000)
        proc = script(stack, "backup.sh", "production", env={"BACKUP_DIR": str(target)}, check=False)
        assert proc.returncode != 0
        assert "no backup was made" in proc.stderr.strip().splitlines()[-1]
        assert sorted(p.name for p in target.iterdir()) == sorted([first, "latest"])
        assert os.readlink(target / "latest") == first
        run("sha256sum", "--quiet", "-c", "SHA256SUMS", cwd=target / first)
    finally:
        run("umount", target)
        sql(stack, "DELETE FROM items WHERE LENGTH(name) = 64")


def test_failing_migration_is_undone_or_restorable(stack):
    before_rows = table_bytes(stack)
    schema_query = ("SELECT column_name FROM information_schema.columns WHERE table_name = 'items' ORDER BY column_name"
                    if stack.answers["database"] == "postgres" else
                    "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = 'app' AND TABLE_NAME = 'items' ORDER BY 1")
    before_schema = sql(stack, schema_query)
    broken = stack.project / "migrations" / "0002_broken.sql"
    broken.write_text("ALTER TABLE items ADD COLUMN note VARCHAR(100);\nUPDATE items SET name = 'clobbered';\nSELECT * FROM no_such_table;\n")
    try:
        stack.compose("build", "app-blue")
        proc = script(stack, "migrate.sh", "production", check=False)
        assert proc.returncode != 0
        reason = proc.stderr.strip().splitlines()[-1]
        assert "migrations failed on production" in reason and "scripts/restore.sh production" in reason
        backup_id = reason.split("scripts/restore.sh production ")[1].split()[0]
        if (sql(stack, schema_query), table_bytes(stack)) != (before_schema, before_rows):
            # MariaDB commits DDL as it goes: the automatic backup brings the state back.
            assert stack.answers["database"] == "mariadb", "PostgreSQL runs each migration in one transaction"
            script(stack, "restore.sh", "production", backup_id, "--confirm-production")
        assert sql(stack, schema_query) == before_schema
        assert table_bytes(stack) == before_rows
    finally:
        broken.unlink()
        stack.compose("build", "app-blue")


def test_retention_over_a_series_of_days(stack, tmp_path):
    """Daily backups for 20 simulated days with keep-last 3 and keep-days 7; the newest verified
    backup (day 2) survives every deletion."""
    keep_last, keep_days, day = 3, 7, 86400
    start = 1_800_000_000
    settings = {"BACKUP_DIR": str(tmp_path), "BACKUP_KEEP_LAST": str(keep_last), "BACKUP_KEEP_DAYS": str(keep_days)}
    made = []
    for n in range(20):
        now = start + n * day
        made.append((now, backup(stack, env={**settings, "BACKUP_NOW": str(now)})))
        if n == 2:
            script(stack, "verify-backup.sh", "production", made[-1][1], env=settings)
        ages = [(now - t, backup_id) for t, backup_id in made]
        newest = sorted(ages)[:keep_last]
        verified = {made[2][1]} if n >= 2 else set()
        expected = {b for age, b in ages if age < keep_days * day} | {b for _, b in newest} | verified
        kept = {p.name for p in tmp_path.iterdir() if p.name[0].isdigit()}
        assert kept == expected, f"day {n}"
    assert made[2][1] in kept and made[1][1] not in kept and made[0][1] not in kept


def test_off_host_copy_in_a_restic_repository(stack, tmp_path):
    repository, password = tmp_path / "restic", tmp_path / "restic-password"
    password.write_text("restic test password")
    settings = {"BACKUP_RESTIC_REPOSITORY": str(repository), "RESTIC_PASSWORD_FILE": str(password)}
    backup_id = backup(stack, env=settings)
    restic = {**os.environ, "RESTIC_REPOSITORY": str(repository), "RESTIC_PASSWORD_FILE": str(password)}
    snapshots = json.loads(subprocess.run(["restic", "snapshots", "--json"], env=restic, text=True,
                                          capture_output=True, check=True).stdout)
    assert any(backup_id in s["tags"] and "production" in s["tags"] for s in snapshots)
    restored = tmp_path / "restored"
    subprocess.run(["restic", "restore", "latest", "--target", str(restored)], env=restic, check=True, capture_output=True)
    copy = next(restored.rglob(backup_id))
    run("sha256sum", "--quiet", "-c", "SHA256SUMS", cwd=copy)


# --- database roles: each holds what it needs and no more --------------------------------------------

REFUSED = {
    "postgres": {
        "create a table": "CREATE TABLE intruder (x int)",
        "alter a table": "ALTER TABLE items ADD COLUMN intruder int",
        "drop a table": "DROP TABLE items",
        "create a temporary table": "CREATE TEMP TABLE intruder (x int)",
        "create a role": "CREATE ROLE intruder",
        "read password hashes": "SELECT rolpassword FROM pg_authid",
        "run a program": "COPY (SELECT 1) TO PROGRAM 'id'",
        "read a server file": "SELECT pg_read_file('/etc/passwd')",
    },
    "mariadb": {
        "create a table": "CREATE TABLE intruder (x int)",
        "alter a table": "ALTER TABLE items ADD COLUMN intruder int",
        "drop a table": "DROP TABLE items",
        "create a user": "CREATE USER intruder",
        "read password hashes": "SELECT * FROM mysql.global_priv",
        "write a server file": "SELECT 1 INTO OUTFILE '/tmp/intruder'",
        "grant itself more": "GRANT ALL ON app.* TO CURRENT_USER",
    },
}


def login_of(stack: Stack, service: str) -> tuple[str, str]:
    """The database user a service logs in as, and its password, from the rendered configuration."""
    environment = json.loads(stack.compose("config", "--format", "json").stdout)["services"][service]["environment"]
    secret = Path(environment["DATABASE_PASSWORD_FILE"]).name
    return environment["DATABASE_USER"], (stack.project / "secrets" / "production" / secret).read_text().strip()


def over_the_network(stack: Stack, login: tuple[str, str], statement: str) -> subprocess.CompletedProcess:
    """STATEMENT sent from inside the app's container (its network namespace) to the database's
    address there, logged in as LOGIN: what the app itself could do with its credentials."""
    app = stack.container("app-blue")
    ip = address_seen_from(app, stack.container("db"))
    db = inspect(stack.container("db"))
    user, password = login
    if stack.answers["database"] == "postgres":
        secret, client = f"PGPASSWORD={password}", ["psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", ip, "-U", user, "-d", "app"]
    else:
        secret, client = f"MYSQL_PWD={password}", ["mariadb", "-h", ip, "-u", user, "--batch", "--skip-column-names", "app"]
    return docker("run", "--rm", "--network", f"container:{app}", "-e", secret, "--entrypoint", client[0],
                  db["Config"]["Image"], *client[1:], "-c" if client[0] == "psql" else "-e", statement, check=False)


def refused(proc: subprocess.CompletedProcess) -> bool:
    message = proc.stderr.lower()
    return proc.returncode != 0 and any(word in message for word in ("denied", "must be owner", "must be superuser"))


def test_the_app_reads_and_writes_rows_and_nothing_more(stack):
    login = login_of(stack, "app-blue")
    assert login[0] == "app_user"
    ok = over_the_network(stack, login, "INSERT INTO items (name) VALUES ('by the app role')")
    assert ok.returncode == 0, ok.stderr
    assert over_the_network(stack, login, "SELECT COUNT(*) FROM items WHERE name = 'by the app role'").stdout.strip() == "1"
    assert over_the_network(stack, login, "DELETE FROM items WHERE name = 'by the app role'").returncode == 0
    for what, statement in REFUSED[stack.answers["database"]].items():
        proc = over_the_network(stack, login, statement)
        assert refused(proc), f"the app's role could {what}, or failed for another reason: {proc.stderr}"
    # The migrations' role changes the schema (it is the owner), so the difference is the role's.
    owner = login_of(stack, "migrate")
    created = over_the_network(stack, owner, "CREATE TABLE owned_by_the_owner (x int)")
    assert created.returncode == 0, created.stderr
    assert over_the_network(stack, owner, "DROP TABLE owned_by_the_owner").returncode == 0


def test_the_backup_role_reads_everything_and_changes_nothing(stack):
    if stack.answers["database"] == "postgres":
        def as_backup(statement: str) -> subprocess.CompletedProcess:
            return stack.compose("exec", "-T", "db", "psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-U", "app_backup",
                                 "-d", "app", "-c", statement, check=False)
        check_backup_role(as_backup)
        return
    for where in ("exec", "run"):  # in the db container (socket), and in the dump's client (network)
        def as_backup(statement: str, where=where) -> subprocess.CompletedProcess:
            host = "" if where == "exec" else "-h db"
            return stack.compose(where, *(["--rm", "--no-deps"] if where == "run" else []), "-T",
                                 "db" if where == "exec" else "db-backup", "sh", "-c",
                                 f'MYSQL_PWD="$(cat /run/secrets/db_backup_password)" exec mariadb {host} -uapp_backup --batch app -e "$0"',
                                 statement, check=False)
        check_backup_role(as_backup)
    # Over the network, the dump's grants only: not the base backup's (RELOAD, BINLOG MONITOR), and
    # no table locks (--single-transaction takes none).
    for statement in ("FLUSH TABLES", "SHOW BINARY LOGS", "LOCK TABLES items READ"):
        proc = as_backup(statement)
        assert refused(proc), (statement, proc.stderr)
    # A profile of its own: `up` never started the dump's client, and `run --rm` left nothing.
    assert "db-backup" not in stack.compose("ps", "--all", "--format", "{{.Service}}").stdout


def check_backup_role(as_backup) -> None:
    assert as_backup("SELECT COUNT(*) FROM items").returncode == 0
    for statement in ("INSERT INTO items (name) VALUES ('by the backup role')", "DELETE FROM items", "DROP TABLE items"):
        proc = as_backup(statement)
        assert refused(proc), (statement, proc.stderr)


def test_db_roles_names_an_administrator_password_the_database_was_not_created_with(stack):
    """The administrator's password file replaced (made again after it was lost): db-roles.sh
    refuses in one line that names the file and the fix, rather than the client's own words, and
    nothing changes; with the file put back it passes."""
    admin = "db_password" if stack.answers["database"] == "postgres" else "db_root_password"
    secret = stack.project / "secrets" / "production" / admin
    kept = secret.read_text()
    secret.write_text(os.urandom(24).hex() + "\n")  # in place: same file, mode and group
    try:
        refused = script(stack, "db-roles.sh", "production", check=False)
    finally:
        secret.write_text(kept)
    assert refused.returncode != 0
    named = [line for line in refused.stderr.splitlines() if line.startswith("db-roles: ")]
    assert len(named) == 1 and f"secrets/<env>/{admin}" in named[0] and "created with another one" in named[0], refused.stderr
    assert "password authentication failed" not in refused.stderr and "Access denied" not in refused.stderr, refused.stderr
    assert "could not be set" in refused.stderr.splitlines()[-1], refused.stderr
    script(stack, "db-roles.sh", "production")
    assert stack.http("GET", "/items")[0] == 200


def test_a_changed_password_takes_effect_through_db_roles(stack):
    """scripts/db-roles.sh after a password file changed: the role gets the new password, the
    restarted app logs in with it, the old one no longer works."""
    secret = stack.project / "secrets" / "production" / "db_app_password"
    old = secret.read_text().strip()
    secret.write_text(os.urandom(24).hex() + "\n")  # in place: same file, mode and group
    script(stack, "db-roles.sh", "production")
    stack.compose("up", "--detach", "--no-deps", "--force-recreate", "--wait", "app-blue")
    assert stack.http("POST", "/items", {"name": "after a password change"})[0] == 201
    rejected = over_the_network(stack, ("app_user", old), "SELECT 1")
    assert rejected.returncode != 0 and "app_user" in rejected.stderr, rejected.stderr
