"""Monitoring an app whose metrics have a server of their own (metrics_port apart from app_port):
Prometheus scrapes every replica on that port, over the private network; the proxy never routes to
it. The app is a fixture of an existing codebase (tests/fixtures/apps/node-metrics-port), not the
example app. Shortened durations and the images not run here: as in test_e2e_monitoring.py."""

from __future__ import annotations

import shutil

import pytest

from e2e_support import Stack, docker, wait_until
from test_e2e_monitoring import monitored, query
from test_e2e_shapes import FIXTURES

pytestmark = pytest.mark.e2e

ANSWERS = dict(project_name="Metrics port", example_app=False, runtime="node", app_port=4500,
               start_command="node server.js", health_path="/health", metrics_path="/metrics", metrics_port=9464,
               environments=["production"], database="none", cache="none", monitoring="prometheus",
               alert_receiver="webhook", proxy="caddy", tls="none", process_manager="none", app_replicas=2)


@pytest.fixture(scope="module")
def stack(copie_session, lab):
    stack = Stack.rendered(copie_session, ANSWERS)
    shutil.copytree(FIXTURES / "node-metrics-port", stack.project, dirs_exist_ok=True)
    try:
        with monitored(stack) as running:
            yield running
    finally:
        docker("image", "rm", "--force", f"{stack.answers['image_name']}:dev", check=False)


def test_each_replica_is_scraped_on_its_metrics_port(stack):
    def scraped():
        up = query(stack, 'up{job="app"}')
        return len(up) == 2 and all(float(s["value"][1]) == 1 for s in up) and up
    up = wait_until(scraped, 120, "both replicas scraped on their metrics port")
    assert {s["metric"]["instance"].rsplit(":", 1)[1] for s in up} == {"9464"}
    # The app's own series, from its metrics server; users' requests are what it counts.
    for _ in range(3):
        assert stack.http("GET", "/")[0] == 200
    wait_until(lambda: sum(float(s["value"][1]) for s in query(stack, "shape_requests_total")) >= 3, 60,
               "the app's counter scraped")
    # The proxy routes users to the app's HTTP port only, and never serves the metrics path.
    assert stack.http("GET", "/metrics")[0] == 404
