"""Data access of the example service: the database (items) and the cache (hit counter)."""

import os
from urllib.parse import unquote, urlsplit

HAS_DATABASE = True
HAS_CACHE = True


class Unavailable(Exception):
    """A dependency (database or cache) did not answer."""


def connect():
    import psycopg

    try:
        return psycopg.connect(os.environ["DATABASE_URL"], connect_timeout=3)
    except psycopg.OperationalError as error:
        raise Unavailable(f"database: {error}") from error


def list_items():
    conn = connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT id, name FROM items ORDER BY id")
            return [{"id": row[0], "name": row[1]} for row in cur.fetchall()]
    finally:
        conn.close()


def add_item(name):
    conn = connect()
    try:
        with conn.cursor() as cur:
            cur.execute("INSERT INTO items (name) VALUES (%s)", (name,))
            cur.execute("SELECT lastval()")
            item_id = cur.fetchone()[0]
        conn.commit()
        return {"id": item_id, "name": name}
    finally:
        conn.close()


def hit():
    """Counts visits in the cache; None when the cache does not answer."""
    import redis

    try:
        return redis.Redis.from_url(os.environ["REDIS_URL"], socket_timeout=2).incr("hits")
    except redis.RedisError:
        return None
