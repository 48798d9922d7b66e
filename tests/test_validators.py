"""Bad answers are refused before anything is written, with a message that names the fix."""

from __future__ import annotations

import pytest
from copier import run_copy

from conftest import ROOT

BAD_ANSWERS = [
    ({"project_name": "   "}, "project_name is empty"),
    ({"project_slug": "Bad Slug"}, "use 1-40 lowercase letters"),
    ({"project_slug": "1api"}, "starting with a letter"),
    ({"project_slug": "api--v2"}, "single dashes"),
    ({"app_port": 80}, "use a port between 1024 and 65535"),
    ({"app_port": 70000}, "use a port between 1024 and 65535"),
    ({"app_port": "abc"}, "app_port 'abc' is not a number: use a port between 1024 and 65535, e.g. 8000"),
    ({"runtime": "node", "app_port": 80}, "between 1024 and 65535, e.g. 3000"),
    ({"metrics_port": 80}, "metrics_port 80 is out of range: the app runs as a non-root user, so use a port between 1024 and 65535, e.g. 8000"),
    ({"metrics_port": "nine"}, "metrics_port 'nine' is not a number"),
    ({"health_path": "healthz"}, 'starting with "/"'),
    # Each of these broke a consumer: nginx's `location =`, Prometheus' relabelling, the check's quotes.
    ({"health_path": "/health?ready=1"}, "health_path '/health?ready=1' is not a plain URL path"),
    ({"health_path": "/health$probe"}, "(no query, spaces or quotes), e.g. /healthz"),
    ({"health_path": "/it's"}, "is not a plain URL path"),
    ({"metrics_path": "metrics"}, "metrics_path 'metrics' is not a plain URL path"),
    ({"metrics_path": "/healthz"}, "metrics_path and health_path must differ"),
    ({"start_command": ""}, "start_command is empty"),
    ({"start_command": "gunicorn app:app | tee log"}, "runs in exec form without a shell"),
    ({"start_command": "node 'server.js"}, "check its quotes"),
    ({"migrate_command": "python -m app.migrate && echo done"}, "runs in exec form without a shell"),
    ({"environments": []}, "choose at least one of dev, staging, production"),
    ({"proxy": "nginx", "tls": "acme"}, "choose proxy caddy or traefik"),
    ({"orchestrators": ["swarm"], "proxy": "traefik", "tls": "none"}, 'orchestrators "swarm" needs proxy nginx or caddy'),
    ({"orchestrators": ["kubernetes"], "kubernetes_ingress_class": "Nginx_Class"},
     "kubernetes_ingress_class 'Nginx_Class' is not a Kubernetes name: use 1-63 lowercase letters, digits and '-'"),
    ({"orchestrators": ["kubernetes"], "kubernetes_ingress_namespace": "-ingress"}, "is not a Kubernetes name"),
    ({"orchestrators": ["kubernetes"], "kubernetes_monitoring_namespace": "monitoring.svc"}, "is not a Kubernetes name"),
    ({"orchestrators": ["kubernetes"], "tls": "acme", "proxy": "caddy", "acme_email": "ops@billing.dev",
      "domain_production": "billing.dev", "domain_staging": "staging.billing.dev", "kubernetes_cluster_issuer": "Lets Encrypt"},
     "kubernetes_cluster_issuer 'Lets Encrypt' is not a Kubernetes name"),
    ({"orchestrators": ["kubernetes"], "database": "postgres", "environments": ["dev"], "kubernetes_postgres": "cloudnative-pg"},
     "kubernetes_postgres cloudnative-pg runs staging and production, and environments has neither: choose statefulset"),
    ({"orchestrators": ["kubernetes"], "database": "postgres", "kubernetes_postgres": "cloudnative-pg",
      "kubernetes_backup_destination": "my-bucket"}, "is not an object store path: use s3://BUCKET[/PATH]"),
    ({"orchestrators": ["kubernetes"], "database": "postgres", "kubernetes_postgres": "cloudnative-pg",
      "kubernetes_backup_endpoint": "minio:9000"}, "kubernetes_backup_endpoint 'minio:9000' is not a URL"),
    ({"orchestrators": ["kubernetes"], "database": "postgres", "kubernetes_postgres": "cloudnative-pg",
      "kubernetes_cnpg_namespace": "CNPG"}, "kubernetes_cnpg_namespace 'CNPG' is not a Kubernetes name"),
    ({"orchestrators": ["kubernetes"], "app_replicas": 4, "app_max_replicas": 3}, "app_max_replicas must be between app_replicas (4) and 100"),
    ({"tls": "acme", "proxy": "caddy", "acme_email": "nobody"}, "acme_email must be an e-mail address"),
    ({"tls": "acme", "proxy": "caddy", "acme_email": "ops@example.com"}, "reserved domain that Let's Encrypt refuses"),
    ({"tls": "acme", "proxy": "traefik", "acme_email": "ops@billing.dev", "domain_production": "billing.example.com"},
     "reserved name that Let's Encrypt refuses (tls is acme)"),
    ({"alert_receiver": "email", "alert_email_to": "ops"}, "alert_email_to 'ops' is not an e-mail address"),
    ({"alert_receiver": "email", "alert_email_from": "alerts@localhost"}, "use one like ops@example.com"),
    ({"alert_receiver": "email", "alert_smtp_smarthost": "smtp.example.com"}, "is not host:port: use e.g. smtp.example.com:587"),
    ({"alert_receiver": "email", "alert_smtp_smarthost": "smtp.example.com:99999"}, "is not host:port"),
    ({"install_dir": "srv/app"}, "install_dir must be an absolute path"),
    ({"image_name": "Registry/App:1.0"}, "without a tag, e.g. ghcr.io/acme/billing-api"),
    ({"domain_production": "not a domain"}, "use lowercase DNS labels"),
    ({"domain_staging": "-bad-.example.com"}, "use lowercase DNS labels"),
    ({"app_replicas": 0}, "app_replicas must be between 1 and 50"),
    ({"app_cpus": "lots"}, "use a number of cores between 0.05 and 64"),
    ({"app_memory": "512MB"}, "use a whole number with M or G"),
    ({"app_memory": "32M"}, "at least 64M"),
    ({"backup_time": "3am"}, "backup_time must be HH:MM"),
    ({"backup_time": "24:00"}, "backup_time must be HH:MM"),
    ({"backup_keep_last": 0}, "the newest backup is never deleted"),
    ({"backup_keep_days": -1}, "backup_keep_days must be 0 or more"),
]


@pytest.mark.parametrize("data, fix", BAD_ANSWERS, ids=[next(iter(d)) + "=" + repr(d[next(iter(d))]) for d, _ in BAD_ANSWERS])
def test_bad_answer_is_refused_with_the_fix_and_nothing_written(tmp_path, data, fix):
    destination = tmp_path / "project"
    with pytest.raises(ValueError) as refused:
        run_copy(str(ROOT), str(destination), data=data, defaults=True, unsafe=True, vcs_ref="HEAD", quiet=True)
    assert fix in str(refused.value)
    assert not destination.exists() or not any(destination.iterdir())


def test_good_non_default_answers_are_accepted(tmp_path):
    run_copy(
        str(ROOT), str(tmp_path / "ok"), defaults=True, unsafe=True, vcs_ref="HEAD", quiet=True,
        data={"project_name": "Billing API", "app_port": 1024, "app_memory": "2G", "app_cpus": "0.25",
              "backup_time": "23:59", "domain_production": "api.example.org", "image_name": "ghcr.io/acme/billing-api"},
    )
    answers = (tmp_path / "ok" / ".copier-answers.yml").read_text()
    assert "project_slug: billing-api" in answers and "app_port: '1024'" in answers
