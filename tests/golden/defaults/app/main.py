"""My Service: example service.

The deployment's contract with any app: listen on PORT, answer /healthz with 200, read
APP_ENV, LOG_LEVEL, DATABASE_URL and REDIS_URL from the environment, and expose Prometheus
metrics on /metrics (http_requests_total and http_request_duration_seconds).
"""

import json
import logging
import os
import time

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

from app import store

HEALTH_PATH = "/healthz"
APP_ENV = os.environ.get("APP_ENV", "development")
VERSION = os.environ.get("APP_VERSION", "dev")

logging.basicConfig(
    level=os.environ.get("LOG_LEVEL", "info").upper(),
    format="%(asctime)s %(levelname)s %(name)s %(message)s",
)
log = logging.getLogger("app")

REQUESTS = Counter("http_requests_total", "HTTP requests served", ["method", "route", "status"])
LATENCY = Histogram("http_request_duration_seconds", "Time to serve a request", ["route"])


def read_json(environ):
    length = int(environ.get("CONTENT_LENGTH") or 0)
    try:
        return json.loads(environ["wsgi.input"].read(length) or b"{}")
    except ValueError:
        return None


def handle(method, path, environ):
    """Returns (route label, status, body, content type)."""
    if path == HEALTH_PATH:
        return "health", "200 OK", {"status": "ok"}, None
    if path == "/metrics":
        return "metrics", "200 OK", generate_latest(), CONTENT_TYPE_LATEST
    if path == "/":
        body = {"service": "my-service", "version": VERSION, "environment": APP_ENV}
        if store.HAS_CACHE:
            body["hits"] = store.hit()
        return "root", "200 OK", body, None
    if path == "/items" and store.HAS_DATABASE:
        if method == "GET":
            return "items", "200 OK", {"items": store.list_items()}, None
        if method == "POST":
            payload = read_json(environ)
            name = payload.get("name") if isinstance(payload, dict) else None
            if not isinstance(name, str) or not name.strip():
                return "items", "400 Bad Request", {"error": 'send JSON {"name": "..."}'}, None
            return "items", "201 Created", store.add_item(name.strip()), None
        return "items", "405 Method Not Allowed", {"error": "use GET or POST"}, None
    if path == "/error":
        # Deliberate failure, for checking error alerts end to end.
        return "error", "500 Internal Server Error", {"error": "deliberate error"}, None
    return "other", "404 Not Found", {"error": "not found"}, None


def app(environ, start_response):
    started = time.perf_counter()
    method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "/")
    try:
        route, status, body, content_type = handle(method, path, environ)
    except store.Unavailable as error:
        log.warning("dependency unavailable: %s", error)
        route, status, body, content_type = "unavailable", "503 Service Unavailable", {"error": "a dependency is unavailable, retry later"}, None
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    start_response(status, [("Content-Type", content_type or "application/json"), ("Content-Length", str(len(payload)))])
    REQUESTS.labels(method, route, status.split()[0]).inc()
    LATENCY.labels(route).observe(time.perf_counter() - started)
    return [payload]
