"""Applies migrations/*.sql in name order, once each, recording them in schema_migrations.

Run as a one-off container before the app starts (the `migrate` service; scripts/migrate.sh).
Exits non-zero on the first failing migration; the ones before it stay applied.
"""

import logging
import pathlib
import sys

from app import store

MIGRATIONS = pathlib.Path(__file__).resolve().parent.parent / "migrations"
log = logging.getLogger("migrate")


def main():
    logging.basicConfig(level=logging.INFO, format="%(asctime)s migrate: %(message)s")
    conn = store.connect()
    with conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version VARCHAR(255) PRIMARY KEY,"
            " applied_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP)"
        )
        cur.execute("SELECT version FROM schema_migrations")
        applied = {row[0] for row in cur.fetchall()}
    conn.commit()
    pending = [path for path in sorted(MIGRATIONS.glob("*.sql")) if path.stem not in applied]
    for path in pending:
        log.info("applying %s", path.name)
        statements = [s.strip() for s in path.read_text().split(";") if s.strip()]
        try:
            with conn.cursor() as cur:
                for statement in statements:
                    cur.execute(statement)
                cur.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (path.stem,))
            conn.commit()
        except Exception as error:  # report which migration failed, then fail
            conn.rollback()
            log.error("%s failed: %s", path.name, error)
            return 1
    log.info("schema is current (%d applied now, %d before)", len(pending), len(applied))
    return 0


if __name__ == "__main__":
    sys.exit(main())
