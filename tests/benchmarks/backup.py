"""Backup benchmark: scripts/backup.sh and scripts/restore.sh on a generated database of at least
1 GB, against the bare dump tool on the same database in the same run.

    python3 tests/benchmarks/backup.py [--gigabytes 1.0] [--database postgres|mariadb] [--pairs 3]

Backups are timed in pairs (bare, then backup.sh), alternating; the medians are compared.

Baselines: PostgreSQL `pg_dump -Fc` to a file (compressed, the usual manual backup) and
`pg_restore` into a fresh database; MariaDB `mariadb-dump --single-transaction | gzip` and
`gunzip | mariadb` into a fresh database. Needs tests/lab/prepare.sh first. Prints Markdown.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from copier import run_copy

ROOT = Path(__file__).resolve().parents[2]
ROW_BYTES = 128  # text per generated row


def sh(*cmd, cwd=None, stdin=None) -> str:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, text=True, capture_output=True, stdin=stdin)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(map(str, cmd))} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout


def timed(*cmd, cwd=None, shell=False) -> float:
    started = time.perf_counter()
    if shell:
        subprocess.run(cmd[0], shell=True, check=True, cwd=cwd, executable="/bin/bash", capture_output=True)
    else:
        sh(*cmd, cwd=cwd)
    return time.perf_counter() - started


class Stack:
    def __init__(self, where: Path, database: str):
        self.project = where / f"bench-{database}"
        self.database = database
        run_copy(str(ROOT), str(self.project), defaults=True, unsafe=True, vcs_ref="HEAD", quiet=True,
                 data={"project_name": f"Bench {database}", "database": database, "cache": "none", "monitoring": "none",
                       "environments": ["production"], "process_manager": "none", "tls": "none", "app_replicas": 1})
        self.compose_sh = self.project / "scripts" / "compose.sh"
        sh(self.project / "scripts" / "init-env.sh", "production")
        env_file = self.project / "env" / "production.env"
        env_file.write_text(env_file.read_text() + "BIND_ADDRESS=127.0.0.1\nHTTP_PORT=0\n")

    def compose(self, *args) -> str:
        return sh(self.compose_sh, "production", *args, cwd=self.project)

    def db(self) -> str:
        return self.compose("ps", "-q", "db").strip()

    def exec_sql(self, statement: str) -> str:
        if self.database == "postgres":
            return sh("docker", "exec", self.db(), "psql", "-X", "-At", "-U", "app", "-d", "app", "-c", statement)
        return sh("docker", "exec", self.db(), "sh", "-c",
                  'MYSQL_PWD="$(cat /run/secrets/db_root_password)" mariadb -uroot -N app -e "$0"', statement)

    def size_bytes(self) -> int:
        if self.database == "postgres":
            return int(self.exec_sql("SELECT pg_database_size('app')"))
        return int(self.exec_sql("SELECT SUM(DATA_LENGTH + INDEX_LENGTH) FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'app'"))

    def fill(self, gigabytes: float) -> None:
        batch = 500_000
        while self.size_bytes() < gigabytes * 1e9:
            if self.database == "postgres":
                self.exec_sql(f"INSERT INTO items (name) SELECT repeat(md5(random()::text), 4) FROM generate_series(1, {batch})")
            else:
                self.exec_sql(f"INSERT INTO items (name) SELECT REPEAT(MD5(RAND()), 4) FROM seq_1_to_{batch}")


def seconds(times: list[float]) -> str:
    return ", ".join(f"{t:.1f}" for t in times)


def bench(database: str, gigabytes: float, scratch: Path, pairs: int) -> list[str]:
    stack = Stack(scratch, database)
    stack.compose("up", "--detach", "--build", "--wait")
    try:
        stack.fill(gigabytes)
        size = stack.size_bytes()
        rows = int(stack.exec_sql("SELECT COUNT(*) FROM items"))
        db = stack.db()
        bare_file = scratch / f"bare-{database}"
        # Both timed dumps read a warm cache: an untimed pass reads the table first.
        stack.exec_sql("SELECT COUNT(*), MAX(LENGTH(name)) FROM items")
        if database == "postgres":
            bare_dump = f"docker exec {db} pg_dump -U app -d app -Fc > {bare_file}"
        else:
            pw = 'MYSQL_PWD="$(cat /run/secrets/db_root_password)"'
            bare_dump = f"docker exec {db} sh -c '{pw} mariadb-dump -uroot --single-transaction --quick app' | gzip -6 > {bare_file}"
        # Pairs, bare then ours, alternating: the medians compare runs that saw the same background
        # (the server still archives and checkpoints the fill during the first ones).
        bare_times, ours_times, backup_id = [], [], ""
        for _ in range(pairs):
            bare_times.append(timed(bare_dump, shell=True))
            started = time.perf_counter()
            backup_id = sh(stack.project / "scripts" / "backup.sh", "production", cwd=stack.project).strip().splitlines()[-1]
            ours_times.append(time.perf_counter() - started)
        bare_backup, ours_backup = statistics.median(bare_times), statistics.median(ours_times)
        if database == "postgres":
            sh("docker", "exec", db, "psql", "-X", "-U", "app", "-d", "postgres", "-c", "CREATE DATABASE bare_restore")
            bare_restore = timed(f"docker exec -i {db} pg_restore -U app -d bare_restore < {bare_file}", shell=True)
        else:
            sh("docker", "exec", db, "sh", "-c", f'{pw} mariadb -uroot -e "CREATE DATABASE bare_restore"')
            bare_restore = timed(f"gzip -dc {bare_file} | docker exec -i {db} sh -c '{pw} mariadb -uroot bare_restore'", shell=True)
        ours_restore = timed(stack.project / "scripts" / "restore.sh", "production", backup_id, "--confirm-production",
                             cwd=stack.project)
        dump = next((stack.project / "backups" / "production" / backup_id).glob("dump.*"))
        # Table cells: a pipe is escaped.
        bare_tools = ("pg_dump -Fc", "pg_restore") if database == "postgres" else ("mariadb-dump \\| gzip", "gunzip \\| mariadb")
        return [
            f"| {database} | {size / 1e9:.2f} GB, {rows:,} rows | backup.sh | {ours_backup:.1f} ({seconds(ours_times)}) | "
            f"{dump.stat().st_size / 1e6:.0f} | {ours_backup / bare_backup:.2f}x | restore.sh: {ours_restore:.0f} s "
            f"({ours_restore / bare_restore:.2f}x) |",
            f"| {database} | | bare {bare_tools[0]} | {bare_backup:.1f} ({seconds(bare_times)}) | "
            f"{bare_file.stat().st_size / 1e6:.0f} | 1.00x | {bare_tools[1]}: {bare_restore:.0f} s |",
        ]
    finally:
        stack.compose("down", "--volumes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gigabytes", type=float, default=1.0)
    parser.add_argument("--pairs", type=int, default=3, help="backups timed per tool, alternating (the median is shown)")
    parser.add_argument("--database", choices=["postgres", "mariadb"], action="append")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(dir="/var/tmp") as scratch:
        for database in args.database or ["postgres", "mariadb"]:
            rows += bench(database, args.gigabytes, Path(scratch), args.pairs)
    print(f"Machine: {os.uname().machine}, {os.cpu_count()} cores; {time.strftime('%Y-%m-%d')}.\n")
    print("| database | size | tool | backup (s): median (each) | artifact (MB) | backup vs bare | restore (s) |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
