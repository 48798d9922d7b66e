"""Monitoring an app that serves no metrics (metrics_path empty): Prometheus learns each replica's
availability from the blackbox exporter probing its health path, and the error ratio from the
proxy's own response counts (Traefik here). A healthy stack fires nothing; a burst of errors fires
HighErrorRatio; stopped replicas fire ServiceDown and reach the receiver. The app is a fixture of
an existing codebase (tests/fixtures/apps/), not the example app. Shortened durations and the
images not run here: as in test_e2e_monitoring.py."""

from __future__ import annotations

import shutil

import pytest

from e2e_support import Stack, docker, wait_until
from test_e2e_monitoring import firing, monitored, query, sink_messages, targets_up
from test_e2e_shapes import FIXTURES

pytestmark = pytest.mark.e2e

ANSWERS = dict(project_name="No metrics", example_app=False, runtime="python", python_installer="pip", app_port=5000,
               start_command="gunicorn --bind 0.0.0.0:5000 app:app", health_path="/health", metrics_path="",
               environments=["production"], database="none", cache="none", monitoring="prometheus",
               alert_receiver="webhook", proxy="traefik", tls="none", process_manager="none", app_replicas=2)


@pytest.fixture(scope="module")
def stack(copie_session, lab):
    stack = Stack.rendered(copie_session, ANSWERS)
    shutil.copytree(FIXTURES / "python-requirements-without-hashes", stack.project, dirs_exist_ok=True)
    try:
        with monitored(stack) as running:
            yield running
    finally:
        docker("image", "rm", "--force", f"{stack.answers['image_name']}:dev", check=False)


def test_each_replica_is_probed_and_a_healthy_stack_fires_nothing(stack):
    def probed():
        up = query(stack, 'probe_success{job="app"}')
        return len(up) == 2 and all(float(s["value"][1]) == 1 for s in up) and up
    wait_until(probed, 120, "both replicas probed healthy on /health")
    assert all(targets_up(stack)["app"]), "the probes themselves are scraped"
    wait_until(lambda: firing(stack) == set(), 90, "no alert firing in a healthy stack")


def test_errors_counted_by_the_proxy_fire_high_error_ratio(stack):
    import time
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert stack.http("GET", "/")[0] == 200
        assert stack.http("GET", "/error")[0] == 500
    wait_until(lambda: query(stack, 'traefik_service_requests_total{service="app@file", code="500"}'), 60,
               "Traefik's count of the errors")
    wait_until(lambda: "HighErrorRatio" in firing(stack), 120, "HighErrorRatio firing from the proxy's metrics")


def test_stopped_replicas_fire_service_down_and_reach_the_receiver(stack):
    stack.compose("stop", "app-blue")
    try:
        wait_until(lambda: "ServiceDown" in firing(stack), 120, "ServiceDown firing")
        wait_until(lambda: "ServiceDown" in sink_messages(stack), 60, "ServiceDown at the webhook")
    finally:
        stack.compose("start", "app-blue")
