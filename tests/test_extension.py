"""Unit tests of the derived settings in extensions/deployment.py (pure Python, no rendering)."""

from __future__ import annotations

import json

import pytest

from extensions import deployment as d

BASE = dict(
    runtime="python", python_installer="pip", database="postgres", cache="redis", monitoring="prometheus",
    proxy="nginx", tls="files", environments=["production", "dev"], project_slug="shop", app_port=8000,
    health_path="/healthz", start_command="gunicorn app.main:app", migrate_command="python -m app.migrate",
    app_cpus="1.0", app_memory="512M", app_replicas=3, domain_production="shop.example.com",
)


def derive(**changes):
    return d.derive(dict(BASE, **changes))


@pytest.mark.parametrize("name, slug", [("Billing API", "billing-api"), ("  My__Service!! ", "my-service"), ("3D Printer", "svc-3d-printer")])
def test_slugify_gives_a_valid_slug(name, slug):
    assert d.slugify(name) == slug
    assert d.slug_error(slug) == ""


def test_environments_keep_a_fixed_order_whatever_the_answer_order():
    assert derive()["environments"] == ["dev", "production"]


def test_per_environment_profiles():
    envs = derive()["envs"]
    assert envs["dev"]["replicas"] == 1 and envs["production"]["replicas"] == 3
    assert envs["dev"]["restart"] == "no" and envs["production"]["restart"] == "always"
    assert envs["production"]["limits"]["app"] == {"cpus": "1", "memory": "512M"}
    assert envs["dev"]["limits"]["app"] == {"cpus": "0.5", "memory": "256M"}
    assert envs["dev"]["published"]["db"]["mapping"] == "127.0.0.1:${DB_PORT:-5432}:5432"
    assert envs["production"]["published"] == {}
    assert envs["production"]["tls"] and not envs["dev"]["tls"]
    assert envs["production"]["secrets"][-2:] == ["tls_cert", "tls_key"] and "tls_cert" not in envs["dev"]["secrets"]


def test_staging_runs_at_most_two_replicas():
    assert derive(environments=["staging"], app_replicas=5)["envs"]["staging"]["replicas"] == 2
    assert derive(environments=["staging"], app_replicas=1)["envs"]["staging"]["replicas"] == 1


def test_services_follow_the_answers():
    assert derive()["services"] == [
        "app", "proxy", "migrate", "db", "cache", "prometheus", "alertmanager", "grafana",
        "node-exporter", "cadvisor", "db-exporter", "cache-exporter", "proxy-exporter",
    ]
    minimal = derive(database="none", cache="none", monitoring="none", proxy="caddy")
    assert minimal["services"] == ["app", "proxy"]
    assert minimal["networks"] == ["edge"] and minimal["volumes"] == [] and minimal["secrets"] == {}


def test_secrets_are_mounted_only_where_read():
    derived = derive(database="mariadb")
    assert derived["secrets"]["db_root_password"] == ["db"]
    assert derived["service_secrets"]["app"] == ["db_password", "redis_password"]
    assert derived["service_secrets"]["db-exporter"] == ["db_password"]
    assert "migrate" not in derive(migrate_command="")["services"]


def test_database_lives_only_on_the_backend_network():
    networks = derive()["service_networks"]
    assert networks["db"] == ["backend"] and networks["proxy"] == ["edge", "monitoring"]
    assert "backend" not in networks["proxy"]


def test_app_healthcheck_needs_no_curl_and_is_escaped_for_compose():
    for runtime in ("python", "node", "go"):
        derived = derive(runtime=runtime)
        check = derived["app_healthcheck"]
        assert check[0] == "CMD" and "curl" not in json.dumps(check) and "wget" not in json.dumps(check)
        assert "http" in json.dumps(check) or "/dev/tcp" in json.dumps(check)
    go = derive(runtime="go")
    assert '"$status"' in go["app_healthcheck"][3] and '"$$status"' in go["app_healthcheck_compose"][3]


def test_image_refs_are_overridable_and_listed_only_when_used():
    derived = derive(database="mariadb", cache="none", monitoring="none", proxy="traefik")
    assert derived["image_ref"]["mariadb"] == "${MARIADB_IMAGE:-" + d.IMAGES["mariadb"] + "}"
    assert derived["image_keys"] == ["python", "traefik", "mariadb"]


@pytest.mark.parametrize("command, expected", [
    ("gunicorn --config app/gunicorn_conf.py app.main:app", '["gunicorn", "--config", "app/gunicorn_conf.py", "app.main:app"]'),
    ("node 'my server.js'", '["node", "my server.js"]'),
])
def test_exec_form(command, expected):
    assert d.exec_form(command) == expected


@pytest.mark.parametrize("value, ok", [("64M", True), ("1G", True), ("63M", False), ("1.5G", False), ("512", False)])
def test_memory_validation(value, ok):
    assert (d.memory_error(value) == "") is ok


class RecordingDict(dict):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.read = set()

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)


def test_derive_reads_only_the_answers_its_cache_key_holds():
    """The context hook caches derive() on DERIVED_FROM: an answer read but not listed would be stale."""
    answers = RecordingDict(BASE, tls="acme", acme_email="a@b.c", backup_time="23:05", domain_staging="s.example.com")
    d.derive(answers)
    assert answers.read <= set(d.DERIVED_FROM), answers.read - set(d.DERIVED_FROM)


def test_backup_schedule_follows_the_answer():
    assert derive(backup_time="23:05")["backup_cron"] == "5 23 * * *"
    assert derive()["backup_environments"] == ["production"]
    assert derive(database="none")["backup_environments"] == []
