"""Point-in-time recovery benchmark (PostgreSQL or MariaDB): RPO and RTO of `scripts/restore.sh ENV
--to latest` after the database volume is lost, against a restore of the latest dump in the same run.

    python3 tests/benchmarks/pitr.py [--gigabytes 1.0] [--minutes 10] [--database postgres|mariadb]

A production stack's `items` table is filled to the size, then a dump (scripts/backup.sh) and a
base backup (scripts/base-backup.sh) are taken; for the given minutes a writer commits one row per
0.2 s and a second session changes 2,000 rows per second (the archived changes). Then the database
container is killed and its volume removed, the stack comes up with a new cluster, and:

- baseline: `scripts/restore.sh production <dump> --confirm-production` (what a project without
  point-in-time recovery gets back: the state of the dump);
- ours: `scripts/restore.sh production --to latest --confirm-production`.

RPO: the writer's acknowledged rows that neither brings back, and how old the newest lost one was.
Needs tests/lab/prepare.sh first. Prints Markdown.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from backup import Stack, sh, timed  # noqa: E402


# Where each database's archive is, in which service: its size is reported.
ARCHIVE = {"postgres": ("db", "/var/lib/postgresql/wal-archive"), "mariadb": ("db-archive", "/var/lib/mysql")}


def sql_command(database: str, container: str, statement: str) -> list[str]:
    """`docker exec` of one statement in the db container, as the administrator."""
    if database == "postgres":
        return ["docker", "exec", container, "psql", "-X", "-q", "-U", "app", "-d", "app", "-c", statement]
    return ["docker", "exec", container, "sh", "-c", 'MYSQL_PWD="$(cat /run/secrets/db_root_password)" exec mariadb -uroot app -e "$0"',
            statement]


class Writer(threading.Thread):
    """Commits one row after another through the database's client in the db container; notes each
    acknowledgement."""

    def __init__(self, stack: Stack, container: str):
        super().__init__(daemon=True)
        self.stack, self.container, self.acked, self.stopping = stack, container, {}, threading.Event()

    def run(self) -> None:
        n = 0
        while not self.stopping.is_set():
            n += 1
            proc = subprocess.run(sql_command(self.stack.database, self.container, f"INSERT INTO items (name) VALUES ('rpo-{n}')"),
                                  capture_output=True)
            if proc.returncode == 0:
                self.acked[f"rpo-{n}"] = time.time()
            time.sleep(0.2)


def changes(stack: Stack, container: str, seconds: float) -> int:
    """Updates 2,000 rows per second for `seconds`: the log the recovery replays."""
    end, done = time.monotonic() + seconds, 0
    rows = int(stack.exec_sql("SELECT MAX(id) FROM items"))
    while time.monotonic() < end:
        first = random.randint(1, max(1, rows - 2000))
        sh(*sql_command(stack.database, container, f"UPDATE items SET name = md5(name) WHERE id BETWEEN {first} AND {first + 1999}"))
        done += 2000
        time.sleep(0.9)
    return done


def bench(database: str, gigabytes: float, minutes: float, scratch: Path) -> list[str]:
    stack = Stack(scratch, database)
    scripts = stack.project / "scripts"
    stack.compose("up", "--detach", "--build", "--wait")
    try:
        stack.fill(gigabytes)
        size = stack.size_bytes()
        dump_id = sh(scripts / "backup.sh", "production", cwd=stack.project).strip().splitlines()[-1]
        base_time = timed(scripts / "base-backup.sh", "production", cwd=stack.project)
        db = stack.db()
        service, path = ARCHIVE[database]

        def archive_size_mb() -> int:
            return int(sh("docker", "exec", stack.compose("ps", "-q", service).strip(), "du", "-sm", path).split()[0])
        archive_before = archive_size_mb()
        writer = Writer(stack, db)
        writer.start()
        changed = changes(stack, db, minutes * 60)
        archive_mb = archive_size_mb()
        sh("docker", "kill", db)
        lost_at = time.time()
        writer.stopping.set()
        writer.join(30)
        stack.compose("rm", "--force", "--stop", "db")
        sh("docker", "volume", "rm", f"bench-{database}-production_db-data")
        stack.compose("up", "--detach", "--wait")
        baseline = timed(scripts / "restore.sh", "production", dump_id, "--confirm-production", cwd=stack.project)
        from_dump = set(stack.exec_sql("SELECT name FROM items WHERE name LIKE 'rpo-%'").split())
        ours = timed(scripts / "restore.sh", "production", "--to", "latest", "--confirm-production", cwd=stack.project)
        from_archive = set(stack.exec_sql("SELECT name FROM items WHERE name LIKE 'rpo-%'").split())
        rows = []
        for name, seconds, restored in (("restore.sh ID (the dump)", baseline, from_dump),
                                        ("restore.sh --to latest", ours, from_archive)):
            lost = {n: t for n, t in writer.acked.items() if n not in restored}
            newest = f"{lost_at - max(lost.values()):.0f} s" if lost else "-"
            oldest = f"{lost_at - min(lost.values()):.0f} s" if lost else "-"
            rows.append(f"| {name} | {seconds:.0f} s | {seconds / baseline:.2f}x | {len(lost):,} of {len(writer.acked):,} | "
                        f"{oldest} | {newest} |")
        header = [f"{database}: database {size / 1e9:.2f} GB; base backup {base_time:.0f} s; {minutes:g} min of changes "
                  f"({changed:,} row updates, {len(writer.acked):,} acknowledged inserts), archive {archive_mb} MB "
                  f"({archive_mb - archive_before} MB of it for these {minutes:g} min).", "",
                  "| restore | time (RTO) | vs the dump's | acknowledged inserts lost | oldest lost (before the loss) | newest lost |",
                  "|---|---|---|---|---|---|"]
        return header + rows
    finally:
        stack.compose("down", "--volumes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gigabytes", type=float, default=1.0)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--database", choices=["postgres", "mariadb"], default="postgres")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir="/var/tmp") as scratch:
        lines = bench(args.database, args.gigabytes, args.minutes, Path(scratch))
    print(f"Machine: {os.uname().machine}, {os.cpu_count()} cores; {time.strftime('%Y-%m-%d')}.\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
