"""The rendered scripts, executed: first-use setup of an environment, secret files and their
permissions, refusals with a one-line reason, and the container entrypoint."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from conftest import answers, require_tool, run


@pytest.fixture
def project(render, tmp_path):
    """A private copy of the default rendering, so that each test starts with no env or secret files."""
    copy = tmp_path / "project"
    # Without what first use of an environment creates (other tests run scripts on the shared render).
    shutil.copytree(render("defaults"), copy, ignore=shutil.ignore_patterns("secrets", "*.env", ".deploy", "backups", "metrics"))
    return copy


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_unknown_environment_is_refused_with_one_line(project):
    proc = run(project / "scripts/compose.sh", "prod", "ps", check=False)
    assert proc.returncode != 0
    assert proc.stderr.strip().count("\n") == 0
    assert "unknown environment 'prod': use one of dev staging production" in proc.stderr
    assert not (project / "env/prod.env").exists() and not (project / "secrets").exists()


def test_usage_without_arguments(project):
    proc = run(project / "scripts/compose.sh", check=False)
    assert proc.returncode != 0 and "usage: scripts/compose.sh ENV" in proc.stderr


def test_init_env_creates_settings_and_secrets_once(project):
    run(project / "scripts/init-env.sh", "production")
    env_file = project / "env/production.env"
    assert env_file.read_text() == (project / "env/production.env.example").read_text()
    secrets = project / "secrets/production"
    assert mode(project / "secrets") == 0o700 and mode(secrets) == 0o700
    expected = {"db_password", "db_owner_password", "db_app_password", "db_exporter_password", "redis_password",
                "grafana_admin_password", "tls_cert", "tls_key", "prometheus_password",
                "prometheus_web_config", "alertmanager_password", "alertmanager_web_config"}
    assert {p.name for p in secrets.iterdir()} == expected | {"backup_signing_key"}
    for secret in secrets.iterdir():
        if secret.name == "backup_signing_key":  # the operator's only: no container reads it
            assert mode(secret) == 0o600, secret
            key = run(require_tool("openssl"), "pkey", "-in", secret, "-noout", "-text").stdout
            assert key.startswith("ED25519 Private-Key"), key
        else:
            assert mode(secret) == 0o640 and secret.stat().st_gid == 10001, secret
    password = (secrets / "db_password").read_text()
    assert len(password) == 48 and all(c in "0123456789abcdef" for c in password)
    # A second run keeps every file as it was: a database keeps the password it was made with.
    before = {p.name: p.read_bytes() for p in secrets.iterdir()}
    env_file.write_text(env_file.read_text() + "LOG_LEVEL=debug\n")
    run(project / "scripts/init-env.sh", "production")
    assert {p.name: p.read_bytes() for p in secrets.iterdir()} == before
    assert env_file.read_text().endswith("LOG_LEVEL=debug\n")
    assert not list(secrets.glob("*.*"))  # no temporary files left behind


def bcrypt_matches(password: str, hashed: str) -> bool:
    check = 'my ($p, $h) = @ARGV; exit(crypt($p, $h) eq $h ? 0 : 1)'
    return subprocess.run([require_tool("perl"), "-e", check, password, hashed]).returncode == 0


def test_monitoring_web_configs_hold_the_passwords_hash_and_follow_it(project):
    """Prometheus' and Alertmanager's web.config.file: the bcrypt hash of the password file their
    clients read, valid for promtool; a new password makes a new file at the next run."""
    run(project / "scripts/init-env.sh", "production")
    secrets = project / "secrets/production"
    for user in ("prometheus", "alertmanager"):
        config = secrets / f"{user}_web_config"
        run(require_tool("promtool"), "check", "web-config", config)
        hashed = yaml.safe_load(config.read_text())["basic_auth_users"][user]
        password = (secrets / f"{user}_password").read_text().strip()
        assert hashed.startswith("$2b$12$") and bcrypt_matches(password, hashed)
        assert not bcrypt_matches(password + "x", hashed)
    unchanged = (secrets / "alertmanager_web_config").read_text()
    (secrets / "prometheus_password").write_text("a-new-password\n")
    os.utime(secrets / "prometheus_password", (time.time() + 5, time.time() + 5))
    proc = run(project / "scripts/init-env.sh", "production")
    hashed = yaml.safe_load((secrets / "prometheus_web_config").read_text())["basic_auth_users"]["prometheus"]
    assert bcrypt_matches("a-new-password", hashed), proc.stderr
    assert "made secrets/production/prometheus_web_config" in proc.stderr
    assert (secrets / "alertmanager_web_config").read_text() == unchanged
    assert oct((secrets / "prometheus_web_config").stat().st_mode & 0o777) == "0o640"


def test_the_app_env_is_made_once_and_carries_an_older_env_files_app_settings(project):
    """A project updated from a release where env/ENV.env was the app's environment too: its app
    settings (keys no compose file uses) reach env/ENV.app.env; Compose's stay out of it."""
    example = (project / "env/production.env.example").read_text()
    (project / "env").mkdir(exist_ok=True)
    (project / "env/production.env").write_text(example + "APP_ENV=production\nLOG_LEVEL=debug\nFEATURE_FLAG=on\n")
    proc = run(project / "scripts/init-env.sh", "production")
    app_env = (project / "env/production.app.env").read_text()
    settings = dict(line.split("=", 1) for line in app_env.splitlines() if line and not line.startswith("#"))
    assert settings == {"APP_ENV": "production", "LOG_LEVEL": "debug", "FEATURE_FLAG": "on"}
    assert "with APP_ENV LOG_LEVEL FEATURE_FLAG from env/production.env" in proc.stderr
    # Made once: later edits stay, and the settings file is not touched.
    (project / "env/production.app.env").write_text(app_env + "ANOTHER=1\n")
    run(project / "scripts/init-env.sh", "production")
    assert (project / "env/production.app.env").read_text().endswith("ANOTHER=1\n")
    assert (project / "env/production.env").read_text().endswith("FEATURE_FLAG=on\n")


def test_init_env_starts_the_backup_clock_only_where_backups_are_scheduled(project):
    for env in ("dev", "production"):
        run(project / "scripts/init-env.sh", env)
    assert list((project / "metrics/dev").iterdir()) == []
    metric = (project / "metrics/production/backup.prom").read_text()
    assert metric.startswith('backup_expected_since_timestamp_seconds{environment="production"} ')
    before = metric
    run(project / "scripts/init-env.sh", "production")
    assert (project / "metrics/production/backup.prom").read_text() == before, "set once, never moved"


def test_receiver_credentials_start_as_a_placeholder_with_a_warning(render, tmp_path):
    copy = tmp_path / "project"
    shutil.copytree(render("py-uv-mariadb-caddy-acme"), copy, ignore=shutil.ignore_patterns("secrets", "*.env"))
    proc = run(copy / "scripts/init-env.sh", "production")
    url = copy / "secrets/production/alert_webhook_url"
    assert url.read_text() == "REPLACE-ME\n" and mode(url) == 0o640 and url.stat().st_gid == 10001
    assert "secrets/production/alert_webhook_url is a placeholder: put the real value there" in proc.stderr
    url.write_text("https://chat.example.org/hooks/abc\n")
    run(copy / "scripts/init-env.sh", "production")
    assert url.read_text() == "https://chat.example.org/hooks/abc\n", "the operator's value is kept"


def test_first_tls_pair_is_self_signed_for_the_domain(project):
    run(project / "scripts/init-env.sh", "staging")
    proc = run(require_tool("openssl"), "x509", "-in", project / "secrets/staging/tls_cert", "-noout", "-subject", "-ext", "subjectAltName")
    domain = answers(project)["domain_staging"]
    assert f"CN = {domain}" in proc.stdout and f"DNS:{domain}" in proc.stdout


@pytest.fixture
def nobodys_project(project):
    """The project copied where UID 65534 can reach it (pytest's tmp_path is private to root)."""
    home = Path(tempfile.mkdtemp(prefix="dp-nobody-", dir="/tmp"))
    copy = home / "project"
    shutil.copytree(project, copy)
    subprocess.run(["chown", "-R", "65534:65534", str(home)], check=True)
    yield copy
    shutil.rmtree(home)


def _as_nobody(*args: str) -> subprocess.CompletedProcess:
    """Runs a command as UID/GID 65534 with no supplementary groups: not root, not in group 10001."""
    return run(require_tool("setpriv"), "--reuid=65534", "--regid=65534", "--clear-groups", *args, check=False,
               env={"PATH": os.environ["PATH"], "HOME": "/nonexistent"})


def test_production_secrets_need_the_secrets_group(nobodys_project):
    project = nobodys_project
    proc = _as_nobody(str(project / "scripts/init-env.sh"), "production")
    assert proc.returncode != 0
    assert "cannot give" in proc.stderr and "run as root (or a member of group 10001)" in proc.stderr
    assert not [p for p in (project / "secrets/production").iterdir()], "no half-made secret may stay"


def test_dev_secrets_fall_back_to_world_readable_with_a_warning(nobodys_project):
    project = nobodys_project
    proc = _as_nobody(str(project / "scripts/init-env.sh"), "dev")
    assert proc.returncode == 0, proc.stderr
    assert "acceptable on a developer's machine only" in proc.stderr
    assert mode(project / "secrets/dev/db_password") == 0o644


def _entrypoint(project: Path, env: dict, *command: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", str(project / "docker/entrypoint.sh"), *command], env={"PATH": os.environ["PATH"], **env},
                          text=True, capture_output=True)


def test_entrypoint_builds_urls_from_secret_files(project, tmp_path):
    (tmp_path / "db").write_text("s3cret-Value_1.~")
    (tmp_path / "redis").write_text("r3dis")
    env = {
        "DATABASE_SCHEME": "postgresql", "DATABASE_USER": "app", "DATABASE_HOST": "db", "DATABASE_PORT": "5432",
        "DATABASE_NAME": "app", "DATABASE_PASSWORD_FILE": str(tmp_path / "db"),
        "REDIS_HOST": "cache", "REDIS_PORT": "6379", "REDIS_PASSWORD_FILE": str(tmp_path / "redis"),
    }
    proc = _entrypoint(project, env, "env")
    assert proc.returncode == 0, proc.stderr
    assert "DATABASE_URL=postgresql://app:s3cret-Value_1.~@db:5432/app" in proc.stdout.splitlines()
    assert "REDIS_URL=redis://:r3dis@cache:6379/0" in proc.stdout.splitlines()
    assert "password=" not in proc.stdout


def test_entrypoint_refuses_secrets_that_need_url_encoding(project, tmp_path):
    (tmp_path / "db").write_text("p@ss/word")
    proc = _entrypoint(project, {"DATABASE_PASSWORD_FILE": str(tmp_path / "db"), "DATABASE_SCHEME": "mysql",
                                 "DATABASE_USER": "app", "DATABASE_HOST": "db", "DATABASE_PORT": "3306",
                                 "DATABASE_NAME": "app"}, "true")
    assert proc.returncode == 1 and "regenerate it" in proc.stderr


def test_entrypoint_says_which_secret_it_cannot_read(project, tmp_path):
    proc = _entrypoint(project, {"DATABASE_PASSWORD_FILE": str(tmp_path / "missing")}, "true")
    assert proc.returncode == 1 and f"cannot read secret file {tmp_path / 'missing'}" in proc.stderr


def test_entrypoint_refuses_a_password_set_twice(project, tmp_path):
    """docker-library's rule: VAR and VAR_FILE both set is an error, not a silent choice."""
    (tmp_path / "db").write_text("fromfile")
    env = {"DATABASE_PASSWORD_FILE": str(tmp_path / "db"), "DATABASE_PASSWORD": "direct", "DATABASE_SCHEME": "mysql",
           "DATABASE_USER": "app", "DATABASE_HOST": "db", "DATABASE_PORT": "3306", "DATABASE_NAME": "app"}
    proc = _entrypoint(project, env, "true")
    assert proc.returncode == 1 and "both DATABASE_PASSWORD and DATABASE_PASSWORD_FILE are set" in proc.stderr
    del env["DATABASE_PASSWORD_FILE"]
    proc = _entrypoint(project, env, "env")
    assert proc.returncode == 0 and "DATABASE_URL=mysql://app:direct@db:3306/app" in proc.stdout.splitlines()
    assert not any(line.startswith("DATABASE_PASSWORD=") for line in proc.stdout.splitlines())


@pytest.mark.parametrize("script, args, reason", [
    ("deploy.sh", ["dev", "v1 2"], "version 'v1 2' is not a valid image tag"),
    ("build.sh", ["dev", "v1 2"], "version 'v1 2' is not a valid image tag"),
    ("build.sh", ["qa", "v1"], "unknown environment 'qa'"),
    ("rollback.sh", ["dev", "v1;rm"], "version 'v1;rm' is not a valid image tag"),
    ("restore.sh", ["production", "../etc", "--confirm-production"], "'../etc' is not a backup id"),
    ("verify-backup.sh", ["dev", "yesterday"], "'yesterday' is not a backup id"),
])
def test_arguments_are_refused_before_anything_is_written(project, script, args, reason):
    proc = run(project / "scripts" / script, *args, check=False)
    assert proc.returncode != 0 and reason in proc.stderr
    assert proc.stderr.strip().count("\n") == 0, "one line"
    for made in ("env/dev.env", "env/production.env", "secrets", ".deploy", "backups"):
        assert not (project / made).exists(), f"{script} wrote {made} before refusing"


def test_an_unexpected_failure_names_the_file_line_and_command(project):
    (project / "env/dev.env.example").unlink()
    proc = run(project / "scripts/init-env.sh", "dev", check=False)
    assert proc.returncode != 0
    assert re.search(r"error: common\.sh:\d+: 'cp .*env\.example.*' exited 1", proc.stderr), proc.stderr
