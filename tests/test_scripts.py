"""The rendered scripts, executed: first-use setup of an environment, secret files and their
permissions, refusals with a one-line reason, and the container entrypoint."""

from __future__ import annotations

import json
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


def test_a_caddy_project_put_in_maintenance_by_an_older_release_stays_in_it(render, tmp_path):
    """Caddy's maintenance was once the page alone; now a switch file, and the page stays when it
    goes off. First use after the update (any script) turns the old state into the switch, once."""
    copy = tmp_path / "project"
    shutil.copytree(render("py-uv-mariadb-caddy-acme"), copy, ignore=shutil.ignore_patterns("secrets", "*.env", ".deploy"))
    proxy = copy / ".deploy/production/proxy"
    proxy.mkdir(parents=True)
    (proxy / "maintenance.html").write_text("<p>back soon</p>")
    run(copy / "scripts/init-env.sh", "production")
    assert (proxy / "maintenance").read_text() == "on" and mode(proxy / "maintenance") == 0o644
    (proxy / "maintenance").write_text("off")  # what scripts/maintenance.sh ENV off writes, page kept
    run(copy / "scripts/init-env.sh", "production")
    assert (proxy / "maintenance").read_text() == "off"
    shutil.rmtree(copy / ".deploy")
    run(copy / "scripts/init-env.sh", "production")
    assert not (copy / ".deploy/production/proxy/maintenance").exists(), "never in maintenance: no switch (off)"


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
    ("restore.sh", ["production", "--to", "yesterday", "--confirm-production"], "'yesterday' is not a time"),
    ("restore.sh", ["production", "--to", "2999-01-01T00:00:00Z", "--confirm-production"], "is in the future"),
    ("restore.sh", ["production", "--to", "latest"], "run again with --confirm-production"),
    ("verify-backup.sh", ["dev", "yesterday"], "'yesterday' is not a backup id"),
    ("audit.sh", ["qa"], "unknown environment 'qa'"),
    ("container-metrics.sh", ["qa", "--once"], "unknown environment 'qa'"),
    ("container-metrics.sh", ["production", "--twice"], "usage: scripts/container-metrics.sh ENV [--once]"),
    ("container-metrics.sh", ["production", "--once"], "metrics/production does not exist: start production once"),
    ("ci/release.sh", ["ghcr.io/acme/App:latest", "v1"], "REPOSITORY is an image repository without tag or digest"),
    ("ci/release.sh", ["ghcr.io/acme/app", "v1 2"], "version 'v1 2' is not a valid image tag"),
    ("ci/scan.sh", ["ghcr.io/acme/app:v1"], "usage: scripts/ci/scan.sh IMAGE@DIGEST"),
    ("ci/sign.sh", ["ghcr.io/acme/app:v1"], "a signature names a digest, never a tag"),
    ("ci/remote.sh", ["production", "HEAD", "true"], "COMMIT is a git commit"),
    ("ci/remote.sh", ["production", "-", "true"], "DEPLOY_HOST is empty: set it as a secret of the production environment"),
    ("ci/test.sh", ["qa"], "unknown environment 'qa'"),
    ("rotate-secret.sh", ["qa", "db_app_password"], "unknown environment 'qa'"),
    ("rotate-secret.sh", ["production"], "usage: scripts/rotate-secret.sh ENV NAME [--from FILE]"),
    ("rotate-secret.sh", ["production", "api_key"], "'api_key' is not a secret of production: use one of db_password "),
    ("rotate-secret.sh", ["production", "db_app_password", "--force"], "unknown argument '--force'"),
    ("rotate-secret.sh", ["production", "db_app_password", "--from"], "--from needs a file"),
    ("rotate-secret.sh", ["production", "db_app_password", "--from", "/no/such/file"], "--from /no/such/file: no such readable file"),
    ("rotate-secret.sh", ["production", "db_password"], "db_password is not rotated by this script: db-roles and the scripts log in with it"),
    ("rotate-secret.sh", ["production", "prometheus_web_config"], "it is made from prometheus_password: rotate that one"),
    ("rotate-secret.sh", ["production", "grafana_admin_password"], "grafana cli admin reset-admin-password"),
    ("rotate-secret.sh", ["production", "tls_key"], "replace tls_cert and tls_key, then scripts/compose.sh production up"),
])
def test_arguments_are_refused_before_anything_is_written(project, script, args, reason):
    proc = run(project / "scripts" / script, *args, check=False)
    assert proc.returncode != 0 and reason in proc.stderr
    assert proc.stderr.strip().count("\n") == 0, "one line"
    for made in ("env/dev.env", "env/production.env", "secrets", ".deploy", "backups"):
        assert not (project / made).exists(), f"{script} wrote {made} before refusing"


@pytest.mark.parametrize("script, args, setting, reason", [
    ("deploy.sh", ["production", "v1"], {"DEPLOY_DRAIN_SECONDS": "1s"}, "DEPLOY_DRAIN_SECONDS '1s' must be a number of seconds"),
    ("deploy.sh", ["production", "v1"], {"DEPLOY_HEALTH_TIMEOUT": "0"}, "DEPLOY_HEALTH_TIMEOUT '0' must be a whole number"),
    ("deploy.sh", ["production", "v1"], {"PROXY_SWITCH_TIMEOUT": "soon"}, "PROXY_SWITCH_TIMEOUT 'soon' must be a whole number"),
    ("rollback.sh", ["production"], {"DEPLOY_STOP_TIMEOUT": "-1"}, "DEPLOY_STOP_TIMEOUT '-1' must be a whole number"),
    ("rollback.sh", ["production", "v1"], {"DEPLOY_DRAIN_SECONDS": ".5"}, "DEPLOY_DRAIN_SECONDS '.5' must be a number of seconds"),
])
def test_deploy_settings_are_refused_before_anything_is_written(project, script, args, setting, reason):
    """A setting that is not a number stops the script at once, not after the switch."""
    proc = run(project / "scripts" / script, *args, env={**os.environ, **setting}, check=False)
    assert proc.returncode != 0 and reason in proc.stderr, proc.stderr
    assert proc.stderr.strip().count("\n") == 0, "one line"
    for made in ("env/production.env", "secrets", ".deploy", "backups"):
        assert not (project / made).exists(), f"{script} wrote {made} before refusing"


@pytest.mark.parametrize("content, reason", [("", "the file is empty"), ("\nsecond\n", "its first line is empty"),
                                             ("REPLACE-ME\n", "that is the placeholder, not a value")])
def test_a_rotation_value_from_a_file_must_be_a_value(project, tmp_path, content, reason):
    given = tmp_path / "value"
    given.write_text(content)
    proc = run(project / "scripts/rotate-secret.sh", "production", "db_app_password", "--from", given, check=False)
    assert proc.returncode != 0 and f"--from {given}: {reason}" in proc.stderr and proc.stderr.strip().count("\n") == 0
    assert not (project / "secrets").exists()


def test_a_value_only_the_operator_has_needs_from(render, tmp_path):
    copy = tmp_path / "project"
    shutil.copytree(render("py-uv-mariadb-caddy-acme"), copy, ignore=shutil.ignore_patterns("secrets", "*.env", ".deploy"))
    proc = run(copy / "scripts/rotate-secret.sh", "production", "alert_webhook_url", check=False)
    assert proc.returncode != 0 and proc.stderr.strip().count("\n") == 0
    assert "alert_webhook_url is a value only you have: put the new one in a file and pass --from FILE" in proc.stderr


def test_a_rotation_to_the_value_in_place_changes_nothing(project, tmp_path):
    run(project / "scripts/init-env.sh", "dev")
    secret = project / "secrets/dev/db_app_password"
    given = tmp_path / "value"
    given.write_text(secret.read_text() + "\n")
    proc = run(project / "scripts/rotate-secret.sh", "dev", "db_app_password", "--from", given, check=False)
    assert proc.returncode != 0 and "the one dev has now: nothing to rotate" in proc.stderr
    assert not (project / "secrets/dev/.rotated").exists() and not (project / ".deploy/dev/lock").exists()


def test_a_secret_not_made_yet_is_not_rotated(project):
    proc = run(project / "scripts/rotate-secret.sh", "production", "db_app_password", check=False)
    assert proc.returncode != 0 and proc.stderr.strip().count("\n") == 0
    assert "secrets/production/db_app_password does not exist yet: the first use of production makes it" in proc.stderr
    assert not (project / "secrets").exists()


def test_an_unexpected_failure_names_the_file_line_and_command(project):
    (project / "env/dev.env.example").unlink()
    proc = run(project / "scripts/init-env.sh", "dev", check=False)
    assert proc.returncode != 0
    assert re.search(r"error: common\.sh:\d+: 'cp .*env\.example.*' exited 1", proc.stderr), proc.stderr


# --- image by digest and its signature (scripts/deploy.sh) ----------------------------------------------

DIGEST = "sha256:" + "ab" * 32


def fake_cosign(tmp_path: Path, exit_code: int, message: str) -> dict:
    """An environment whose PATH has a `cosign` that records its arguments and answers as told
    (cosign itself cannot be installed here: no access to its release downloads)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    cosign = bin_dir / "cosign"
    cosign.write_text(f"#!/bin/sh\necho \"$@\" >>{tmp_path}/cosign.args\necho '{message}' >&2\nexit {exit_code}\n")
    cosign.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def signed_project(project: Path) -> None:
    run(project / "scripts/init-env.sh", "production")
    env_file = project / "env/production.env"
    text = env_file.read_text().replace("SIGNING_IDENTITY=\n", "SIGNING_IDENTITY=^https://github\\.com/acme/shop/.+$\n")
    env_file.write_text(text)


def deploy(project: Path, *args: str, env: dict | None = None, digest: str | None = DIGEST):
    environment = dict(env or os.environ)
    environment.pop("APP_IMAGE_DIGEST", None)
    if digest:
        environment["APP_IMAGE_DIGEST"] = digest
    return subprocess.run([str(project / "scripts/deploy.sh"), "production", "v1.2.3", *args], cwd=project, env=environment,
                          capture_output=True, text=True, timeout=120)


def releases_untouched(project: Path) -> bool:
    return not (project / ".deploy/production/releases.tsv").exists()


def path_without(tmp_path: Path, command: str) -> str:
    """A PATH with every command of this one but COMMAND (links in one directory)."""
    tools = tmp_path / f"without-{command}"
    tools.mkdir()
    for directory in os.environ["PATH"].split(":"):
        for entry in (Path(directory).iterdir() if Path(directory).is_dir() else []):
            link = tools / entry.name
            if entry.name != command and not link.exists() and os.access(entry, os.X_OK):
                link.symlink_to(entry)
    return str(tools)


@pytest.mark.parametrize("script", ["deploy.sh", "rollback.sh"])
def test_a_traefik_deploy_needs_curl_before_anything_is_written(render, tmp_path, script):
    """The switch is confirmed through Traefik's HTTP port with curl: without it, refused first."""
    project = tmp_path / "project"
    shutil.copytree(render("py-poetry-traefik-nodb"), project, ignore=shutil.ignore_patterns("secrets", "*.env", ".deploy"))
    environment = answers(project)["environments"][0]
    env = {**os.environ, "PATH": path_without(tmp_path, "curl")}
    proc = subprocess.run([str(project / "scripts" / script), environment, *(["v1.2.3"] if script == "deploy.sh" else [])],
                          cwd=project, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "curl is not installed: install curl" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (project / ".deploy").exists() and not (project / f"env/{environment}.env").exists()


def test_a_malformed_digest_is_refused_before_anything_is_written(project):
    proc = deploy(project, digest="sha256:abc")
    assert proc.returncode != 0 and "APP_IMAGE_DIGEST is not sha256: and 64 hex digits: sha256:abc" in proc.stderr
    assert not (project / ".deploy").exists() and not (project / "env/production.env").exists()


def test_with_a_signing_identity_a_tag_only_deploy_is_refused(project):
    signed_project(project)
    proc = deploy(project, digest=None)
    assert proc.returncode != 0 and "sets SIGNING_IDENTITY: deploy an image by its digest" in proc.stderr, proc.stderr
    assert releases_untouched(project)


def test_with_a_signing_identity_deploy_needs_cosign(project, tmp_path):
    signed_project(project)
    no_cosign = {**os.environ, "PATH": ":".join(p for p in os.environ["PATH"].split(":") if not (Path(p) / "cosign").exists())}
    proc = deploy(project, env=no_cosign)
    assert proc.returncode != 0 and "SIGNING_IDENTITY is set: install cosign" in proc.stderr, proc.stderr
    assert releases_untouched(project)


def test_an_unsigned_or_wrongly_signed_image_is_refused(project, tmp_path):
    signed_project(project)
    env = fake_cosign(tmp_path, 1, "Error: no matching signatures: none of the expected identities matched")
    proc = deploy(project, env=env)
    assert proc.returncode != 0, proc.stderr
    assert f"refusing to deploy shop@{DIGEST}" not in proc.stderr  # the default render's image is my-service
    assert f"refusing to deploy my-service@{DIGEST}: its signature does not verify for identity" in proc.stderr, proc.stderr
    assert "no matching signatures" in proc.stderr
    args = (tmp_path / "cosign.args").read_text().split()
    assert args[:1] == ["verify"] and f"my-service@{DIGEST}" in args
    assert args[args.index("--certificate-identity-regexp") + 1] == "^https://github\\.com/acme/shop/.+$"
    assert args[args.index("--certificate-oidc-issuer") + 1] == "https://token.actions.githubusercontent.com"
    assert releases_untouched(project)


def test_a_verified_signature_lets_the_deploy_go_on_to_the_digest(project, tmp_path):
    """With a signature that verifies, deploy.sh goes on and pulls the digest (no registry here:
    the pull fails, after the verification, naming the reference)."""
    signed_project(project)
    proc = deploy(project, env=fake_cosign(tmp_path, 0, "Verification for my-service@sha256 -- OK"))
    assert f"my-service@{DIGEST} is signed by" in proc.stderr, proc.stderr
    assert proc.returncode != 0 and f"cannot pull my-service@{DIGEST}" in proc.stderr
    assert releases_untouched(project)


def test_a_signing_identity_without_issuer_is_refused(project, tmp_path):
    signed_project(project)
    env_file = project / "env/production.env"
    env_file.write_text(re.sub(r"SIGNING_ISSUER=.*", "SIGNING_ISSUER=", env_file.read_text()))
    proc = deploy(project, env=fake_cosign(tmp_path, 0, "ok"))
    assert proc.returncode != 0 and "SIGNING_IDENTITY is set but SIGNING_ISSUER is empty" in proc.stderr
    assert not (tmp_path / "cosign.args").exists()


# --- the scan gate, on recorded Trivy reports (tests/fixtures/trivy) ------------------------------

TRIVY = Path(__file__).parent / "fixtures" / "trivy"


def gate(project: Path, *reports: str, ignore: str | None = None, today: str = "2026-11-27", **env: str):
    ignorefile = project / ".trivyignore"
    if ignore is not None:
        ignorefile.write_text(ignore)
    metrics = project / ".ci-reports" / "scan.prom"
    proc = subprocess.run(["python3", str(project / "scripts/ci/scan-gate.py"), "--ignorefile", str(ignorefile),
                           "--metrics", str(metrics), "--today", today, *(str(TRIVY / r) for r in reports)],
                          capture_output=True, text=True, env={**os.environ, **env}, timeout=60)
    blocked = [line.split()[3] for line in proc.stdout.splitlines() if line.startswith("BLOCK")]
    return proc, blocked, metrics.read_text() if metrics.exists() else ""


def test_scan_gate_blocks_fixable_high_and_critical_only(project):
    proc, blocked, metrics = gate(project, "pip.json", "mariner-1.0.json")
    assert proc.returncode == 1 and blocked == ["CVE-2019-14806"], proc.stdout  # HIGH, fixed in 0.15.3
    # Not blocking: the HIGH without a fix (CVE-2022-0261), the MEDIUM and the LOW with one.
    assert 'scan_findings{kind="vulnerability",severity="HIGH",fixable="false"} 1' in metrics
    assert 'scan_findings{kind="vulnerability",severity="HIGH",fixable="true"} 1' in metrics
    assert "scan_blocking_findings 1" in metrics
    proc, blocked, _ = gate(project, "pip.json", SCAN_FAIL_ON="CRITICAL")
    assert proc.returncode == 0 and blocked == []
    proc, blocked, _ = gate(project, "pip.json", SCAN_FAIL_ON="MEDIUM,HIGH")
    assert proc.returncode == 1 and blocked == ["CVE-2019-14806", "CVE-2020-28724"]
    proc, _, _ = gate(project, "pip.json", SCAN_FAIL_ON="SEVERE")
    assert proc.returncode == 2 and "SCAN_FAIL_ON has ['SEVERE']" in proc.stderr


def test_scan_gate_blocks_any_secret_and_failed_high_checks(project):
    proc, blocked, metrics = gate(project, "secrets.json", "dockerfile.json")
    assert proc.returncode == 1
    assert set(blocked) >= {"aws-access-key-id", "DS-0002"} and "DS-0002" in blocked
    assert 'scan_findings{kind="misconfiguration",severity="HIGH",fixable="true"} 1' in metrics


def test_scan_gate_honours_an_ignore_entry_with_reason_and_expiry_until_it_expires(project):
    ignore = "# why: Werkzeug is a test-only dependency here (JIRA-7)\nCVE-2019-14806 exp:2027-02-01\n"
    proc, blocked, metrics = gate(project, "pip.json", ignore=ignore)
    assert proc.returncode == 0 and blocked == [], proc.stdout + proc.stderr
    assert "IGNORED HIGH" in proc.stdout and "until 2027-02-01" in proc.stdout and "scan_ignored_findings 1" in metrics
    proc, blocked, metrics = gate(project, "pip.json", ignore=ignore, today="2027-02-02")
    assert proc.returncode == 1 and blocked == ["CVE-2019-14806"]
    assert "CVE-2019-14806 expired on 2027-02-01: it no longer hides the finding" in proc.stderr
    assert "scan_ignore_entries_expired 1" in metrics


@pytest.mark.parametrize("ignore, problem", [
    ("CVE-2019-14806 exp:2027-01-01\n", "CVE-2019-14806 has no '# why: ...' line above it"),
    ("# why: accepted\nCVE-2019-14806\n", "CVE-2019-14806 has no expiry: add exp:YYYY-MM-DD"),
    ("# why: accepted\nCVE-2019-14806 exp:2030-01-01\n", "expires 2030-01-01, more than 180 days ahead"),
    ("# why: accepted\nCVE-2019-14806 exp:soon\n", "invalid expiry soon"),
])
def test_scan_gate_refuses_an_ignore_entry_without_reason_or_expiry(project, ignore, problem):
    proc, _, _ = gate(project, "pip.json", ignore=ignore)
    assert proc.returncode == 1 and problem in proc.stderr, proc.stderr


def test_scan_gate_says_which_report_it_cannot_read(project, tmp_path):
    proc = subprocess.run(["python3", str(project / "scripts/ci/scan-gate.py"), str(TRIVY / "README.md")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "README.md is not a Trivy JSON report" in proc.stderr


# --- the Swarm target (DEPLOY_TARGET in env/ENV.env) -----------------------------------------------------

@pytest.mark.parametrize("target, reason", [
    ("swarm", "DEPLOY_TARGET=swarm for production, but this project has no Swarm target: answer orchestrators with swarm"),
    ("kubernetes", "DEPLOY_TARGET=kubernetes for production, but this project has no Kubernetes target: answer orchestrators with kubernetes"),
    ("nomad", "DEPLOY_TARGET=nomad in env/production.env: use compose, swarm or kubernetes"),
])
def test_a_target_the_project_lacks_is_refused(project, target, reason):
    run(project / "scripts/init-env.sh", "production")
    env_file = project / "env/production.env"
    env_file.write_text(env_file.read_text() + f"DEPLOY_TARGET={target}\n")
    for script in ("deploy.sh", "rollback.sh"):
        proc = run(project / "scripts" / script, "production", "v1", check=False)
        assert proc.returncode != 0 and reason in proc.stderr and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert not (project / ".deploy/production/releases.tsv").exists()


def target_project(render, tmp_path, variant: str, env: str, settings: str) -> Path:
    """A private copy of VARIANT with ENV initialised and SETTINGS appended to env/ENV.env."""
    copy = tmp_path / f"{variant}-project"
    shutil.copytree(render(variant), copy, ignore=shutil.ignore_patterns("secrets", "*.env", ".deploy", "backups", "metrics"))
    run(copy / "scripts/init-env.sh", env)
    env_file = copy / f"env/{env}.env"
    env_file.write_text(env_file.read_text() + settings)
    return copy


@pytest.fixture
def swarm_project(render, tmp_path):
    return target_project(render, tmp_path, "py-pip-mariadb-nginx-existing", "staging",
                          "DEPLOY_TARGET=swarm\nSWARM_HOST=unix:///nonexistent/manager.sock\n")


def test_swarm_deploy_names_the_manager_it_cannot_reach(swarm_project):
    proc = run(swarm_project / "scripts/deploy.sh", "staging", "v1", check=False)
    assert proc.returncode != 0
    assert "no Swarm manager answers at unix:///nonexistent/manager.sock" in proc.stderr.strip().splitlines()[-1]
    assert "set SWARM_HOST in env/staging.env" in proc.stderr
    assert not (swarm_project / ".deploy/staging/releases.tsv").exists()


@pytest.mark.parametrize("args, reason", [
    (["staging", "v1;rm"], "version 'v1;rm' is not a valid image tag"),
    (["staging", "v1", "--restore-db"], "unknown option --restore-db (on a Swarm: scripts/rollback.sh ENV [VERSION])"),
    (["staging", "v1", "v2"], "usage: scripts/rollback.sh ENV [VERSION]"),
])
def test_swarm_rollback_refuses_bad_arguments_first(swarm_project, args, reason):
    proc = run(swarm_project / "scripts/rollback.sh", *args, check=False)
    assert proc.returncode != 0 and reason in proc.stderr, proc.stderr
    assert not (swarm_project / ".deploy/staging/lock").exists()


def test_swarm_settings_follow_composes_rules(swarm_project):
    """The stack file's variables come from env/ENV.env as Compose reads it: the last line of a key
    counts, the environment wins; images default to the pin, through IMAGE_MIRROR when set."""
    env_file = swarm_project / "env/staging.env"
    env_file.write_text(env_file.read_text() + "APP_IMAGE=first\nAPP_IMAGE=\"registry.example/app\"\nIMAGE_MIRROR=mirror.example:5000\n"
                        "NGINX_IMAGE=registry.example/nginx:pinned\n")
    script = (f"source scripts/lib/common.sh; source scripts/lib/release.sh; source scripts/lib/swarm.sh; RELEASE_ENV=staging; "
              f"swarm_export_settings staging; swarm_export_images; swarm_export_versions staging; "
              f"echo \"$APP_IMAGE|$HTTP_PORT|$REDIS_IMAGE|$NGINX_IMAGE|$SWARM_SECRET_REDIS_PASSWORD\"")
    proc = run("bash", "-c", script, cwd=swarm_project, env={**os.environ, "HTTP_PORT": "8888"})
    app_image, http_port, redis, caddy, secret_version = proc.stdout.strip().split("|")
    assert (app_image, http_port, caddy) == ("registry.example/app", "8888", "registry.example/nginx:pinned")
    assert redis.startswith("mirror.example:5000/library/redis:")
    digest = __import__("hashlib").sha256((swarm_project / "secrets/staging/redis_password").read_bytes()).hexdigest()
    assert secret_version == digest[:12]


@pytest.mark.parametrize("script, args", [("audit.sh", []), ("maintenance.sh", ["on"]), ("db-roles.sh", [])])
def test_scripts_without_a_swarm_version_refuse_a_swarm_environment(swarm_project, script, args):
    proc = run(swarm_project / "scripts" / script, "staging", *args, check=False)
    assert proc.returncode != 0 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert f"scripts/{script} has no Swarm version: staging runs on a Swarm (DEPLOY_TARGET=swarm in env/staging.env)" in proc.stderr


# --- the Kubernetes target (DEPLOY_TARGET=kubernetes) -------------------------------------------------------

@pytest.fixture
def kubernetes_project(render, tmp_path):
    copy = target_project(render, tmp_path, "node-postgres-traefik-files", "production",
                          "DEPLOY_TARGET=kubernetes\nKUBERNETES_CONTEXT=no-such-cluster\n")
    # The scripts' settings stay out of the app's environment (the Kubernetes ConfigMap).
    assert "KUBERNETES_" not in (copy / "env/production.app.env").read_text()
    for name in ("backup_store_access_key_id", "backup_store_secret_access_key"):  # CloudNativePG's object store
        (copy / "secrets/production" / name).write_text(f"{name}-value\n")
    return copy


def test_kubernetes_deploy_refuses_an_object_store_key_left_a_placeholder(kubernetes_project):
    """Before anything (no cluster asked, nothing built): CloudNativePG would archive to nowhere."""
    (kubernetes_project / "secrets/production/backup_store_secret_access_key").write_text("REPLACE-ME\n")
    proc = run(kubernetes_project / "scripts/deploy.sh", "production", "v1", check=False)
    assert proc.returncode != 0 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert ("secrets/production/backup_store_secret_access_key holds no real value: put the object store's "
            "credentials there") in proc.stderr
    assert not (kubernetes_project / ".deploy/production/kubernetes").exists()


def test_the_in_cluster_backup_without_openssl_stops_before_the_dump(kubernetes_project, tmp_path):
    """The backup CronJob's image must have openssl (the manifest's signature; the official
    PostgreSQL and MariaDB images have it): without it, one line saying so, before the dump and
    before any connection, and no backup becomes latest."""
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("bash", "date", "dirname", "basename", "mkdir", "chmod", "cat", "sed", "rm", "find", "od", "tr"):
        (tools / tool).symlink_to(shutil.which(tool))
    mounted = tmp_path / "opt"  # the ConfigMap db-backup-scripts: the scripts and the libraries side by side
    mounted.mkdir()
    for script in [*(kubernetes_project / "scripts/kubernetes/in-cluster").iterdir(),
                   *(kubernetes_project / "scripts/lib" / name for name in ("core.sh", "db.sh", "backups.sh"))]:
        shutil.copy(script, mounted)
    claim = tmp_path / "claim"
    slug = yaml.safe_load((kubernetes_project / ".copier-answers.yml").read_text())["project_slug"]
    proc = subprocess.run(["bash", mounted / "backup.sh"], capture_output=True, text=True,
                          env={"PATH": str(tools), "POD_NAMESPACE": f"{slug}-production", "BACKUP_ROOT": str(claim),
                               "BACKUP_SIGNING_KEY_FILE": str(kubernetes_project / "secrets/production/backup_signing_key")})
    assert proc.returncode != 0 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "openssl is not installed: needed to sign and check backups" in proc.stderr
    assert not (claim / "production" / "latest").exists() and not list((claim / "production").glob("*Z"))


def test_kubernetes_deploy_names_the_cluster_it_cannot_reach(kubernetes_project):
    require_tool("kubectl")
    proc = run(kubernetes_project / "scripts/deploy.sh", "production", "v1", check=False)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert "no Kubernetes cluster answers at no-such-cluster" in last and "set KUBERNETES_CONTEXT in env/production.env" in last
    assert not (kubernetes_project / ".deploy/production/releases.tsv").exists()
    assert not (kubernetes_project / ".deploy/production/kubernetes").exists()


@pytest.mark.parametrize("args, reason", [
    (["production", "v1;rm"], "version 'v1;rm' is not a valid image tag"),
    (["production", "v1", "--restore-db"], "unknown option --restore-db (on Kubernetes: scripts/rollback.sh ENV [VERSION])"),
    (["production", "v1", "v2"], "usage: scripts/rollback.sh ENV [VERSION]"),
    (["production", "v1"], "no release history in .deploy/production: nothing to roll back to"),
])
def test_kubernetes_rollback_refuses_bad_arguments_first(kubernetes_project, args, reason):
    proc = run(kubernetes_project / "scripts/rollback.sh", *args, check=False)
    assert proc.returncode != 0 and reason in proc.stderr, proc.stderr
    assert not (kubernetes_project / ".deploy/production/kubernetes").exists()


@pytest.mark.parametrize("script, args", [("audit.sh", []), ("maintenance.sh", ["on"]), ("db-roles.sh", []), ("migrate.sh", []),
                                          ("rotate-secret.sh", ["db_app_password"])])
def test_scripts_without_a_kubernetes_version_refuse_a_kubernetes_environment(kubernetes_project, script, args):
    proc = run(kubernetes_project / "scripts" / script, "production", *args, check=False)
    assert proc.returncode != 0 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert (f"scripts/{script} has no Kubernetes version: production runs on Kubernetes "
            "(DEPLOY_TARGET=kubernetes in env/production.env)") in proc.stderr


# Both layouts of mariadb-dump's multi-row INSERTs, with literals holding what a naive count would miscount.
MARIADB_DUMP = r"""CREATE TABLE `items` (
CREATE TABLE `empty` (
CREATE TABLE `we``ird` (
INSERT INTO `items` VALUES (1,'plain'),(2,'a),(b'),(3,'quote \' and \\\\ backslash'),(4,'ends with backslash\\'),(5,'x),(\'),(y'),(6,NULL),(7,''),(8,'it''s'),(9,'\\\''),(10,'semi;');
INSERT INTO `items` VALUES
(11,'one ( paren'),
(12,'a),(b'),
(13,'ends;'),(14,'two on a line');
INSERT INTO `we``ird` VALUES
(1,2);
-- Dump completed on 2026-12-05 01:00:00
"""


@pytest.mark.parametrize("dump, counts, status", [
    (MARIADB_DUMP, "empty\t0\nitems\t14\nwe`ird\t1\n", 0),
    (MARIADB_DUMP.rsplit("--", 1)[0], "empty\t0\nitems\t14\nwe`ird\t1\n", 3),
], ids=["complete", "without the trailer"])
def test_mariadb_dump_rows_are_counted_outside_string_literals(render, dump, counts, status):
    db_sh = render("node-mariadb-nginx-existing") / "scripts/lib/db.sh"
    proc = subprocess.run(["bash", "-c", f'set -Eeuo pipefail; source "{db_sh}"; count_dump_rows'], input=dump, capture_output=True, text=True)
    assert (proc.stdout, proc.returncode) == (counts, status), proc.stderr


# --- scripts/container-metrics.sh against cgroup trees laid out as each driver lays them out ------

CONTAINER_A = "a" * 64
CONTAINER_B = "b" * 64


def write_files(directory: Path, files: dict[str, str]) -> None:
    directory.mkdir(parents=True)
    for name, text in files.items():
        (directory / name).write_text(text)


def container_metrics(project: Path, cgroups: Path, env: str = "production") -> dict[str, float]:
    out = project / "metrics" / env
    out.mkdir(parents=True)
    run(project / "scripts/container-metrics.sh", env, "--once", env={**os.environ, "CGROUP_ROOT": str(cgroups)})
    assert mode(out / "containers.prom") == 0o644, "node-exporter (another user) reads it"
    samples = {}
    for line in (out / "containers.prom").read_text().splitlines():
        if not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def test_container_metrics_from_cgroup_v1_cgroupfs(project, tmp_path):
    """cgroupfs driver, cgroup v1: a slice per service under the runtime's own cgroup (here nested,
    as in this lab's memory hierarchy); other environments and projects are left out."""
    cgroups = tmp_path / "cgroup"
    (cgroups / "unified").mkdir(parents=True)  # a hybrid host: v2 mounted beside, without controllers
    write_files(cgroups / f"cpuacct/my-service-production-app-blue.slice/{CONTAINER_A}", {"cpuacct.usage": "2500000000\n"})
    write_files(cgroups / f"cpuacct/my-service-production-proxy.slice/{CONTAINER_B}", {"cpuacct.usage": "7\n"})
    write_files(cgroups / f"cpuacct/my-service-staging-app-blue.slice/{'c' * 64}", {"cpuacct.usage": "1\n"})
    write_files(cgroups / f"cpuacct/other-production-app.slice/{'d' * 64}", {"cpuacct.usage": "1\n"})
    memory = cgroups / "memory/runtime/abc"
    write_files(memory / f"my-service-production-app-blue.slice/{CONTAINER_A}", {
        "memory.usage_in_bytes": "50000000\n", "memory.stat": "cache 1\ntotal_inactive_file 10000000\n",
        "memory.limit_in_bytes": "268435456\n", "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"})
    write_files(memory / f"my-service-production-proxy.slice/{CONTAINER_B}", {
        "memory.usage_in_bytes": "1000\n", "memory.stat": "total_inactive_file 4000\n",
        "memory.limit_in_bytes": "9223372036854771712\n", "memory.oom_control": "oom_kill_disable 0\n"})
    samples = container_metrics(project, cgroups)
    blue = 'environment="production",service="app-blue",container_id="aaaaaaaaaaaa"'
    proxy = 'environment="production",service="proxy",container_id="bbbbbbbbbbbb"'
    assert samples == {
        f"compose_container_cpu_seconds_total{{{blue}}}": 2.5,
        f"compose_container_cpu_seconds_total{{{proxy}}}": 7e-9,
        f"compose_container_memory_working_set_bytes{{{blue}}}": 40000000,
        f"compose_container_memory_working_set_bytes{{{proxy}}}": 0,  # inactive cache above usage: none
        f"compose_container_memory_limit_bytes{{{blue}}}": 268435456,  # the proxy's: no limit, no sample
        f"compose_container_oom_kills_total{{{blue}}}": 2,
        f"compose_container_oom_kills_total{{{proxy}}}": 0,
        'compose_container_metrics_containers{environment="production"}': 2,
        'compose_container_metrics_timestamp_seconds{environment="production"}':
            samples['compose_container_metrics_timestamp_seconds{environment="production"}'],
    }
    assert abs(samples['compose_container_metrics_timestamp_seconds{environment="production"}'] - time.time()) < 60


def test_container_metrics_from_cgroup_v2_systemd(project, tmp_path):
    """systemd driver, cgroup v2: the slice's name nests it (my.slice/my-service.slice/...), each
    container a docker-ID.scope."""
    cgroups = tmp_path / "cgroup"
    write_files(cgroups, {"cgroup.controllers": "cpu memory pids\n"})
    slices = cgroups / "my.slice/my-service.slice/my-service-production.slice"
    write_files(slices / f"my-service-production-db.slice/docker-{CONTAINER_A}.scope", {
        "cpu.stat": "usage_usec 1500000\nuser_usec 1000000\n", "memory.current": "300000000\n",
        "memory.stat": "anon 1\ninactive_file 100000000\n", "memory.max": "max\n",
        "memory.events": "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n"})
    write_files(slices / "my-service-production-db.slice/docker-not-a-container.mount", {"cpu.stat": "usage_usec 9\n"})
    # A kernel without memory.stat and memory.events: what they give counts as 0.
    write_files(slices / f"my-service-production-cache.slice/docker-{CONTAINER_B}.scope", {
        "cpu.stat": "usage_usec 2\n", "memory.current": "4096\n", "memory.max": "1048576\n"})
    # A container that exited while it was read: its counters gone, it is left out.
    write_files(slices / f"my-service-production-cache.slice/docker-{'c' * 64}.scope", {"cpu.stat": "usage_usec 1\n"})
    samples = container_metrics(project, cgroups)
    db = 'environment="production",service="db",container_id="aaaaaaaaaaaa"'
    cache = 'environment="production",service="cache",container_id="bbbbbbbbbbbb"'
    assert {k: v for k, v in samples.items() if "timestamp" not in k} == {
        f"compose_container_cpu_seconds_total{{{db}}}": 1.5,
        f"compose_container_memory_working_set_bytes{{{db}}}": 200000000,
        f"compose_container_oom_kills_total{{{db}}}": 1,
        f"compose_container_cpu_seconds_total{{{cache}}}": 2e-6,
        f"compose_container_memory_working_set_bytes{{{cache}}}": 4096,
        f"compose_container_memory_limit_bytes{{{cache}}}": 1048576,
        f"compose_container_oom_kills_total{{{cache}}}": 0,
        'compose_container_metrics_containers{environment="production"}': 2,
    }


def test_container_metrics_without_containers_still_writes_the_file(project, tmp_path):
    """A stack not started yet (or started before it had slices): zero containers, said so."""
    (tmp_path / "cgroup/cpuacct").mkdir(parents=True)
    samples = container_metrics(project, tmp_path / "cgroup", env="staging")
    assert samples['compose_container_metrics_containers{environment="staging"}'] == 0


# --- container-metrics.sh as cron and supervisord run it: root without any capability -----------

def host_job_commands(project: Path) -> list[list[str]]:
    """The container-metrics commands of deploy/cron or deploy/supervisor, as argv, with --once."""
    a = answers(project)
    cron = project / "deploy/cron" / f"{a['project_slug']}-container-metrics"
    if cron.exists():
        # minute hour day month weekday user command...
        return [line.split()[6:] for line in cron.read_text().splitlines()
                if "container-metrics.sh" in line and not line.startswith("#")]
    supervisor = (project / "deploy/supervisor" / f"{a['project_slug']}.conf").read_text()
    return [line.removeprefix("command=").split() + ["--once"] for line in supervisor.splitlines()
            if line.startswith("command=") and "container-metrics.sh" in line]


@pytest.mark.parametrize("variant", ["go-postgres-traefik-acme-existing", "py-uv-mariadb-caddy-acme"])
def test_host_jobs_run_container_metrics_as_root_without_capabilities(render, variant, tmp_path):
    """cron (/etc/cron.d, as root) and supervisord (root) start it through setpriv: no capability to
    pass a file's permissions, none to regain, as the systemd unit's empty CapabilityBoundingSet."""
    if os.geteuid() != 0:
        pytest.skip("cron and supervisord start it as root: run as root to check what root keeps")
    require_tool("setpriv")
    project = tmp_path / "project"
    shutil.copytree(render(variant), project, ignore=shutil.ignore_patterns("secrets", "*.env", ".deploy", "backups", "metrics"))
    install_dir = answers(project)["install_dir"]
    commands = [[arg.replace(install_dir, str(project)) for arg in argv] for argv in host_job_commands(project)]
    assert commands and all(argv[-2:] == [env, "--once"] for argv, env in zip(commands, answers(project)["environments"]))
    for argv in commands:
        script = argv.index(str(project / "scripts/container-metrics.sh"))
        status = run(*argv[:script], "cat", "/proc/self/status").stdout
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        assert {k: fields[k].strip() for k in ("CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs")} == {
            "CapPrm": "0" * 16, "CapEff": "0" * 16, "CapBnd": "0" * 16, "CapAmb": "0" * 16, "NoNewPrivs": "1"}
        assert fields["Uid"].split()[0] == "0"
        cgroups = tmp_path / "cgroup"
        (cgroups / "cpuacct").mkdir(parents=True, exist_ok=True)
        out = project / "metrics" / argv[-2]
        out.mkdir(parents=True)
        job_env = {**os.environ, "CGROUP_ROOT": str(cgroups)}
        # Another owner's directory: root with its capabilities would write there, this job cannot.
        os.chown(out, 65534, 65534)
        proc = run(*argv, env=job_env, check=False)
        assert proc.returncode != 0 and not (out / "containers.prom").exists(), proc.stderr
        assert proc.stderr.strip().endswith(
            f"container-metrics: error: {out} is not writable by user root (without capabilities root needs to own it: chown root {out})")
        os.chown(out, 0, 0)
        run(*argv, env=job_env)
        assert "compose_container_metrics_containers" in (out / "containers.prom").read_text()


def requirement_files(render, source: Path, out: Path) -> subprocess.CompletedProcess:
    """The rendered docker/requirement-files.py, run as the Dockerfile's requirements stage runs it."""
    return run("python3", render("defaults") / "docker" / "requirement-files.py", source, out, check=False)


def write_tree(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


HASHED = "gunicorn==27.0.1 \\\n    --hash=sha256:378b26b9a38adcf4592f28828233c1716acc55e833ea06bf48719782efaa0d10\n"


def test_requirement_files_takes_the_files_pip_reads_and_sets_local_paths_apart(render, tmp_path):
    source, out = tmp_path / "src", tmp_path / "out"
    write_tree(source, {
        "requirements.txt": "# production\n-r requirements/production.txt\n-e file:libs/one\n--editable=./libs/two  # ours\n",
        "requirements/production.txt": "-r base.txt\n-c ../constraints.txt\n" + HASHED
                                        + "./libs/three[extra]\n-e git+https://example.com/x.git#egg=x\n",
        "requirements/base.txt": "--requirement=https://example.com/remote.txt\n-f ../wheels\nflask>=3  # web\n",
        "wheels/vendored-1.0-py3-none-any.whl": "a wheel kept in the project",
        "constraints.txt": "flask<4\n",
        "requirements/unused.txt": "django\n",
        "app.py": "print('not a requirement')\n",
        **{f"libs/{n}/pyproject.toml": f"[project]\nname = '{n}'\n" for n in ("one", "two", "three")},
    })
    proc = requirement_files(render, source, out)
    assert proc.returncode == 0, proc.stderr
    written = {str(p.relative_to(out)): p.read_text() for p in out.rglob("*") if p.is_file()}
    assert sorted(written) == [".local-requirements.txt", ".requirements-hashed", "constraints.txt",
                               "libs/one/pyproject.toml", "libs/three/pyproject.toml", "libs/two/pyproject.toml",
                               "requirements.txt", "requirements/base.txt", "requirements/production.txt",
                               "wheels/vendored-1.0-py3-none-any.whl"]
    assert written[".local-requirements.txt"] == "libs/one\n./libs/two\n./libs/three[extra]\n"
    # Only the local lines change; hashes, remote includes and VCS requirements stay for pip.
    assert written["requirements/base.txt"] == (source / "requirements/base.txt").read_text()
    assert written["constraints.txt"] == "flask<4\n"
    assert HASHED in written["requirements/production.txt"]
    assert "\n-e git+https://example.com/x.git#egg=x\n" in written["requirements/production.txt"]
    assert "\n./libs/three" not in written["requirements/production.txt"]
    assert [line for line in written["requirements.txt"].splitlines() if not line.startswith("#")] == ["-r requirements/production.txt"]


def test_requirement_files_keep_the_names_pip_opens(render, tmp_path):
    source, out = tmp_path / "src", tmp_path / "out"
    write_tree(source, {"requirements.txt": "-r requirements/prod.txt\n", "requirements/common.txt": "flask\n"})
    (source / "requirements" / "prod.txt").symlink_to("common.txt")
    assert requirement_files(render, source, out).returncode == 0
    assert (out / "requirements" / "prod.txt").read_text() == "flask\n"


def test_requirement_files_of_a_project_that_installs_itself_copy_it_whole(render, tmp_path):
    source, out = tmp_path / "src", tmp_path / "out"
    write_tree(source, {"requirements.txt": "flask\n-e .\n", "pyproject.toml": "[project]\n", "src/pkg/__init__.py": ""})
    assert requirement_files(render, source, out).returncode == 0
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == [
        ".local-requirements.txt", "pyproject.toml", "requirements.txt", "src/pkg/__init__.py"]
    assert (out / ".local-requirements.txt").read_text() == ".\n"
    lines = (out / "requirements.txt").read_text().splitlines()
    assert [line for line in lines if not line.startswith("#")] == ["flask"], "the rewritten file, not the copy"


@pytest.mark.parametrize("files, reason", [
    ({"app.py": ""}, "error: no requirements.txt in the project: add one (pip freeze, pip-compile), or choose python_installer uv, poetry or pipenv"),
    ({"Pipfile": "", "Pipfile.lock": "{}"},
     "error: no requirements.txt in the project: add one (pip freeze, pip-compile; Pipfile.lock is here: or choose python_installer pipenv)"),
    ({"pyproject.toml": "", "uv.lock": ""},
     "error: no requirements.txt in the project: add one (pip freeze, pip-compile; uv.lock is here: or choose python_installer uv)"),
    ({"requirements.txt": "flask\n-r requirements/prod.txt\n"},
     "error: requirements.txt line 2 names requirements/prod.txt, which is not in the build context (check .dockerignore)"),
    ({"requirements.txt": "-r reqs/a.txt\n", "reqs/a.txt": "-c ../../outside.txt\n"},
     "error: reqs/a.txt line 1 names ../../outside.txt, outside the project: the image is built from this directory only"),
    ({"requirements.txt": "flask\n-e ../shared\n"}, "error: requirements.txt line 2 names ../shared, outside the project"),
    ({"requirements.txt": "./libs/missing\n"}, "error: requirements.txt line 1 names ./libs/missing, which is not in the build context"),
    ({"requirements.txt": "--find-links ./wheels\nflask\n"}, "error: requirements.txt line 1 names ./wheels, which is not in the build context"),
])
def test_requirement_files_refuses_a_file_it_cannot_read_with_one_line(render, tmp_path, files, reason):
    write_tree(tmp_path / "src", files)
    (tmp_path / "outside.txt").write_text("flask\n")
    proc = requirement_files(render, tmp_path / "src", tmp_path / "out")
    assert proc.returncode == 1
    assert proc.stderr.startswith(reason) and proc.stderr.count("\n") == 1, proc.stderr


def node_install(render, project: Path, *args: str) -> subprocess.CompletedProcess:
    """The rendered docker/node-install.sh, run in PROJECT as the Dockerfile's stages run it."""
    return run("sh", render("node-mariadb-nginx-existing") / "docker" / "node-install.sh", *args, cwd=project, check=False)


@pytest.mark.parametrize("lock", ["package-lock.json", None])
def test_node_install_leaves_a_node_modules_for_an_app_without_dependencies(render, tmp_path, lock):
    """The runtime stage copies node_modules: an app with no dependency (npm makes no directory
    for it, with a lock or without) still has one, empty."""
    require_tool("npm")
    (tmp_path / "package.json").write_text('{"name": "bare", "version": "1.0.0", "private": true}\n')
    if lock:
        (tmp_path / lock).write_text('{"name": "bare", "version": "1.0.0", "lockfileVersion": 3, "requires": true, '
                                     '"packages": {"": {"name": "bare", "version": "1.0.0"}}}\n')
    installed = node_install(render, tmp_path, "production")
    assert installed.returncode == 0, installed.stderr
    assert (tmp_path / "node_modules").is_dir() and not any(p.name != ".package-lock.json" for p in (tmp_path / "node_modules").iterdir())


def test_node_install_refuses_what_it_cannot_install_before_installing_anything(render, tmp_path):
    """Each refusal is one line naming the fix, before any package manager runs (nothing is
    installed, no network is needed)."""
    assert node_install(render, tmp_path).stderr == "error: usage: node-install.sh production [DEST] | all\n"
    assert node_install(render, tmp_path, "dev").returncode == 1
    assert node_install(render, tmp_path, "all", "/deps").returncode == 1
    assert node_install(render, tmp_path, "production").stderr == f"error: no package.json in {tmp_path}\n"
    (tmp_path / "package.json").write_text('{"name": "x", "packageManager": "yarn@4.5.0"}\n')
    # Yarn 2+ with Plug'n'Play (no nodeLinker, its default): no node_modules for the image to run.
    (tmp_path / "yarn.lock").write_text('__metadata:\n  version: 8\n')
    refused = node_install(render, tmp_path, "production")
    assert refused.returncode == 1 and refused.stderr.startswith("error: yarn.lock is Yarn 2+'s, whose Plug'n'Play")
    assert refused.stderr.rstrip().endswith("add 'nodeLinker: node-modules' to .yarnrc.yml")
    (tmp_path / ".yarnrc.yml").write_text("nodeLinker: pnp\n")
    assert "Plug'n'Play" in node_install(render, tmp_path, "all").stderr
    # Yarn 2 or 3 (packageManager says so): Yarn 1 or 4+ only.
    (tmp_path / ".yarnrc.yml").write_text("nodeLinker: node-modules\n")
    (tmp_path / "package.json").write_text('{"name": "x", "packageManager": "yarn@3.6.4+sha224.abc"}\n')
    assert node_install(render, tmp_path, "production").stderr == (
        "error: yarn.lock is Yarn 3.6.4's: this image installs with Yarn 1 or 4+ (yarn set version stable)\n")
    # A pnpm lock format it does not know, and no packageManager to say which pnpm wrote it.
    (tmp_path / "yarn.lock").unlink()
    (tmp_path / "package.json").write_text('{"name": "x"}\n')
    (tmp_path / "pnpm-lock.yaml").write_text("lockfileVersion: '12.0'\n")
    refused = node_install(render, tmp_path, "production")
    assert refused.returncode == 1 and "lockfileVersion this image does not know ('12')" in refused.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [".yarnrc.yml", "package.json", "pnpm-lock.yaml"], "nothing installed"


def build_env(render, tmp_path, content: str, shell: str = "sh") -> subprocess.CompletedProcess:
    """The rendered docker/build-env.sh sourced by SHELL as a dependency step sources it, with
    CONTENT as the build's secret; prints the environment it leaves."""
    secret = tmp_path / "build_env"
    secret.write_text(content)
    script = render("defaults") / "docker" / "build-env.sh"
    return run(shell, "-c", f". {script} && env -0", env={"PATH": os.environ["PATH"], "BUILD_ENV_SECRET": str(secret)},
               check=False)


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_the_builds_credentials_reach_the_dependency_steps_as_a_dotenv_file_has_them(render, tmp_path, shell):
    proc = build_env(render, tmp_path, "# a registry token\n\n  NPM_TOKEN=npm_abc=def\r\nexport PIP_INDEX_URL=https://u:p@pypi.example.com/simple/\n"
                     "QUOTED=\"two words\"\nSINGLE='x'\nEMPTY=\nLAST=no-newline", shell)
    assert proc.returncode == 0, proc.stderr
    environment = dict(item.split("=", 1) for item in proc.stdout.split("\0") if item)
    assert {k: environment[k] for k in ("NPM_TOKEN", "PIP_INDEX_URL", "QUOTED", "SINGLE", "EMPTY", "LAST")} == {
        "NPM_TOKEN": "npm_abc=def", "PIP_INDEX_URL": "https://u:p@pypi.example.com/simple/", "QUOTED": "two words",
        "SINGLE": "x", "EMPTY": "", "LAST": "no-newline"}
    assert not [name for name in environment if name.startswith("build_env")], "the script's own variables are gone"
    # No secret (BuildKit mounts an empty one by default): nothing exported, nothing fails.
    assert build_env(render, tmp_path, "", shell).returncode == 0


@pytest.mark.parametrize("content, reason", [
    ("GOOD=1\nnpm-token=abc\n", "line 2 of the build's credentials is not NAME=VALUE"),
    ("1ST=abc\n", "line 1 of the build's credentials is not NAME=VALUE"),
    ("A=1\n\nsecret-without-name\n", "line 3 of the build's credentials has no '='"),
])
def test_a_credentials_line_that_is_not_name_value_stops_the_build_without_showing_it(render, tmp_path, content, reason):
    proc = build_env(render, tmp_path, content)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr == f"error: {reason}" + (" (NAME: letters, digits and _)\n" if "NAME=VALUE" in reason else ": NAME=VALUE\n")
    assert "abc" not in proc.stderr and "secret" not in proc.stderr


def test_only_builds_with_credentials_mount_the_secret(project, tmp_path):
    """Compose builds the dependency stages' -credentials copies (the secret mounted) when
    BUILD_ENV_FILE is set, the copies without it otherwise (a secret mount delays its step)."""
    good = tmp_path / "build.env"
    good.write_text("NPM_TOKEN=abc\n")
    good.chmod(0o600)
    for env, stage in (({}, ""), ({"BUILD_ENV_FILE": str(good)}, "-credentials")):
        proc = run(project / "scripts" / "compose.sh", "dev", "config", "--format", "json", env={**os.environ, **env})
        build = json.loads(proc.stdout)["services"]["app-blue"]["build"]
        assert build["args"]["BUILD_ENV_STAGE"] == stage, env
        assert "FROM build${BUILD_ENV_STAGE} AS build-chosen" in (project / "Dockerfile").read_text()


def test_the_github_workflow_names_a_credentials_file_only_when_the_secret_is_set(project, tmp_path):
    """Each job's step that writes the BUILD_ENV secret, run as GitHub runs it (bash -e): with the
    secret, a file only the job's user reads, named in GITHUB_ENV; without it, neither (the builds
    then take the stages without the secret mount)."""
    workflow = yaml.safe_load((project / ".github" / "workflows" / "ci.yml").read_text())
    steps = [step["run"] for job in workflow["jobs"].values() for step in job["steps"]
             if "BUILD_ENV" in step.get("env", {})]
    assert len(steps) == 2, "the test and release jobs"
    for script in steps:
        for secret in ("", "NPM_TOKEN=abc"):
            runner = tmp_path / f"runner-{len(secret)}"
            shutil.rmtree(runner, ignore_errors=True)
            runner.mkdir()
            github_env = runner / "github.env"
            github_env.touch()
            run("bash", "-e", "-c", script, env={"PATH": os.environ["PATH"], "BUILD_ENV": secret,
                                                   "RUNNER_TEMP": str(runner), "GITHUB_ENV": str(github_env)})
            written = runner / "build.env"
            if secret:
                assert github_env.read_text() == f"BUILD_ENV_FILE={written}\n"
                assert written.read_text() == secret + "\n" and stat.S_IMODE(written.stat().st_mode) == 0o600
            else:
                assert github_env.read_text() == "" and not written.exists()


def test_a_build_checks_its_credentials_file_before_anything_is_written(project, tmp_path):
    """BUILD_ENV_FILE is checked by every path that builds (compose.sh build or up --build,
    build.sh, CI's release.sh) before anything is written; a good one is taken."""
    missing = {**os.environ, "BUILD_ENV_FILE": str(tmp_path / "nowhere.env")}
    for args in (["compose.sh", "dev", "up", "--build"], ["compose.sh", "dev", "build"], ["build.sh", "dev", "v1"],
                 ["ci/release.sh", "ghcr.io/acme/app", "v1"]):
        proc = run(project / "scripts" / args[0], *args[1:], env=missing, check=False)
        assert proc.returncode == 1, args
        assert proc.stderr.strip().endswith(f"BUILD_ENV_FILE is not a readable file: {tmp_path / 'nowhere.env'}"), proc.stderr
        assert not (project / "env" / "dev.env").exists() and not (project / ".ci-reports").exists(), args
    bad = tmp_path / "build.env"
    bad.write_text("NPM_TOKEN=abc\nnpm-token=abc\n")
    bad.chmod(0o600)
    proc = run(project / "scripts" / "build.sh", "dev", "v1", env={**os.environ, "BUILD_ENV_FILE": str(bad)}, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().endswith(f"BUILD_ENV_FILE {bad}: line 2 of the build's credentials is not NAME=VALUE "
                                        "(NAME: letters, digits and _)"), proc.stderr
    assert "abc" not in proc.stderr and proc.stderr.count("\n") == 1
    # A relative path is the project's, as Compose reads it; a file others may read is named.
    (project / "secrets").mkdir()
    (project / "secrets" / "build.env").write_text("NPM_TOKEN=abc\n")
    (project / "secrets" / "build.env").chmod(0o644)
    proc = run("bash", "-c", 'source scripts/lib/common.sh && check_build_env dev && echo "$BUILD_ENV_FILE"', cwd=project,
               env={**os.environ, "BUILD_ENV_FILE": "secrets/build.env"}, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(project / "secrets" / "build.env")
    assert "is open to other users: chmod 600 it" in proc.stderr


def test_node_package_files_are_the_roots_and_every_workspaces_laid_out_as_in_the_project(render, tmp_path):
    """What the dependencies' layers are built from: nothing of the source but the package files,
    none from node_modules or hidden directories (.git, .yarn's cache)."""
    write_tree(tmp_path / "src", {
        "package.json": '{"workspaces": ["packages/*", "apps/*"]}', "package-lock.json": "{}", ".npmrc": "x=1",
        "pnpm-workspace.yaml": "packages: []", "server.js": "", "README.md": "",
        "packages/a/package.json": "{}", "packages/a/index.js": "", "apps/web/package.json": "{}",
        "apps/web/src/app.js": "", "patches/ms@2.1.3.patch": "", "node_modules/ms/package.json": "{}",
        "packages/a/node_modules/x/package.json": "{}", ".git/package.json": "{}", ".yarn/cache/package.json": "{}"})
    script = render("node-mariadb-nginx-existing") / "docker" / "node-package-files.sh"
    run("sh", script, tmp_path / "src", tmp_path / "out")
    copied = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert copied == [".npmrc", "apps/web/package.json", "package-lock.json", "package.json", "packages/a/package.json",
                      "patches/ms@2.1.3.patch", "pnpm-workspace.yaml"]
    assert run("sh", script, tmp_path / "src", check=False).stderr == "error: usage: node-package-files.sh SRC DEST\n"


def test_node_install_moves_every_node_modules_where_the_runtime_copies_them(render, tmp_path):
    """An npm workspace (no registry needed: the packages are the project's own): the root's
    node_modules, whose links point into the workspaces, lands in DEST with them intact."""
    require_tool("npm")
    write_tree(tmp_path / "project", {
        "package.json": '{"name": "mono", "version": "1.0.0", "private": true, "workspaces": ["packages/*"]}',
        "packages/a/package.json": '{"name": "@mono/a", "version": "1.0.0", "dependencies": {"@mono/b": "1.0.0"}}',
        "packages/b/package.json": '{"name": "@mono/b", "version": "1.0.0"}'})
    project = tmp_path / "project"
    installed = node_install(render, project, "production", str(tmp_path / "deps"))
    assert installed.returncode == 0, installed.stderr
    assert not (project / "node_modules").exists()
    link = tmp_path / "deps" / "node_modules" / "@mono" / "b"
    assert link.is_symlink() and os.readlink(link) == "../../packages/b"
