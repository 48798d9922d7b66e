"""Answers: the validators copier.yml calls (each returns "" when the value is fine, else a message
that names the fix) and the filters templates use on answers."""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

SLUG_RE = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
DOMAIN_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
IMAGE_RE = re.compile(r"^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*$")
MEMORY_RE = re.compile(r"^([1-9][0-9]*)([MG])$")
# What every consumer of a path takes as written: the proxies' configurations (nginx `location =`,
# Caddy and Traefik matchers, which never see a query), Prometheus' relabelling ($ is a group),
# shell and the health check's code (quotes).
URL_PATH_RE = re.compile(r"^/[A-Za-z0-9._~/-]*$")


def slugify(value: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", str(value).lower()).strip("-")
    if slug and not slug[0].isalpha():
        slug = f"svc-{slug}"
    return slug[:40].rstrip("-")


def slug_error(value: str) -> str:
    if not SLUG_RE.match(value or "") or len(value) > 40:
        return (
            f"project_slug {value!r} is not usable as a compose project and image name: use 1-40 "
            "lowercase letters, digits and single dashes, starting with a letter, e.g. billing-api"
        )
    return ""


def port_error(value: Any, suggestion: int = 8000, name: str = "app_port") -> str:
    """`suggestion`: the runtime's usual port, named in the message."""
    try:
        port = int(str(value).strip())
    except (TypeError, ValueError):
        return f"{name} {value!r} is not a number: use a port between 1024 and 65535, e.g. {suggestion}"
    if not 1024 <= port <= 65535:
        return (
            f"{name} {port} is out of range: the app runs as a non-root user, so use a port "
            f"between 1024 and 65535, e.g. {suggestion}"
        )
    return ""


def command_error(value: str, name: str, optional: bool = False) -> str:
    if not (value or "").strip():
        return "" if optional else f"{name} is empty: give the command that starts the app, e.g. node server.js"
    try:
        shlex.split(value)
    except ValueError as error:
        return f"{name} cannot be split into arguments ({error}): check its quotes"
    if any(ch in value for ch in "|&;<>`$"):
        return (
            f"{name} uses shell syntax, but it runs in exec form without a shell: "
            "give a plain command, or put the shell logic in a script and name that script"
        )
    return ""


def url_path_error(value: str, name: str, example: str, optional: bool = False) -> str:
    if optional and not value:
        return ""
    if not URL_PATH_RE.match(value or ""):
        return (
            f"{name} {value!r} is not a plain URL path: use one starting with \"/\", of letters, digits "
            f"and '/', '-', '.', '_', '~' (no query, spaces or quotes), e.g. {example}"
        )
    return ""


def image_error(value: str) -> str:
    if not IMAGE_RE.match(value or ""):
        return (
            f"image_name {value!r} is not an image repository: use lowercase letters, digits, "
            "'.', '_', '-' and '/', without a tag, e.g. ghcr.io/acme/billing-api"
        )
    return ""


# Names reserved for documentation and tests (RFC 2606, RFC 6761): Let's Encrypt refuses them.
RESERVED_DOMAIN_RE = re.compile(r"(^|\.)(example\.(com|net|org)|example|test|invalid|localhost)$")


def domain_error(value: str, name: str, acme: bool = False) -> str:
    """`acme`: certificates come from Let's Encrypt, which refuses reserved names."""
    if not DOMAIN_RE.match(value or ""):
        return f"{name} {value!r} is not a host name: use lowercase DNS labels, e.g. api.example.com"
    if acme and RESERVED_DOMAIN_RE.search(value):
        return (f"{name} {value!r} is a reserved name that Let's Encrypt refuses (tls is acme): "
                "use the service's real host name, or tls files")
    return ""


K8S_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def k8s_name_error(value: str, name: str) -> str:
    """A Kubernetes object name (an RFC 1123 label), e.g. a namespace or an IngressClass."""
    if not K8S_NAME_RE.match(value or ""):
        return f"{name} {value!r} is not a Kubernetes name: use 1-63 lowercase letters, digits and '-', e.g. ingress-nginx"
    return ""


OBJECT_STORE_RE = re.compile(r"^(s3|gs)://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[A-Za-z0-9._/-]*)?$|^https://[A-Za-z0-9.-]+(:[0-9]{1,5})?/[A-Za-z0-9._/-]+$")
ENDPOINT_RE = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?/?$")


def object_store_error(value: str) -> str:
    """Where CloudNativePG's backups go: an S3 or GCS bucket (and path), or an Azure container URL."""
    if not OBJECT_STORE_RE.match(value or ""):
        return (f"kubernetes_backup_destination {value!r} is not an object store path: use s3://BUCKET[/PATH], "
                "gs://BUCKET[/PATH] or https://ACCOUNT.blob.core.windows.net/CONTAINER")
    return ""


def endpoint_error(value: str) -> str:
    """An S3-compatible endpoint (MinIO, Ceph, ...), or empty for the provider's own."""
    if value and not ENDPOINT_RE.match(value):
        return (f"kubernetes_backup_endpoint {value!r} is not a URL: use e.g. https://minio.example.org:9000, "
                "or leave it empty for Amazon S3")
    return ""


def acme_email_error(value: str) -> str:
    if "@" not in (value or ""):
        return "acme_email must be an e-mail address, e.g. ops@your-company.com"
    if RESERVED_DOMAIN_RE.search(value.rsplit("@", 1)[1].lower()):
        return (f"acme_email {value!r} is at a reserved domain that Let's Encrypt refuses: "
                "use an address someone reads (expiry warnings go there)")
    return ""


EMAIL_RE = re.compile(r"^[^@\s]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
SMARTHOST_RE = re.compile(r"^[A-Za-z0-9.-]+:[0-9]{1,5}$")


def email_error(value: str, name: str) -> str:
    if not EMAIL_RE.match(value or ""):
        return f"{name} {value!r} is not an e-mail address: use one like ops@example.com"
    return ""


def smarthost_error(value: str) -> str:
    if not SMARTHOST_RE.match(value or "") or not 0 < int(value.rsplit(":", 1)[1]) < 65536:
        return f"alert_smtp_smarthost {value!r} is not host:port: use e.g. smtp.example.com:587"
    return ""


def cpus_error(value: str) -> str:
    try:
        cpus = float(value)
    except (TypeError, ValueError):
        cpus = -1.0
    if not 0.05 <= cpus <= 64:
        return f"app_cpus {value!r} is not a CPU count: use a number of cores between 0.05 and 64, e.g. 1.0"
    return ""


def memory_error(value: str) -> str:
    match = MEMORY_RE.match(value or "")
    if not match or memory_mib(value) < 64:
        return f"app_memory {value!r} is not a memory size: use a whole number with M or G, at least 64M, e.g. 512M"
    return ""


def memory_mib(value: str) -> int:
    match = MEMORY_RE.match(value)
    if not match:
        raise ValueError(value)
    number, unit = int(match.group(1)), match.group(2)
    return number * 1024 if unit == "G" else number


def exec_form(command: str) -> str:
    """A command line as the JSON array Dockerfile CMD and Compose `command:` take."""
    return json.dumps(shlex.split(command))
