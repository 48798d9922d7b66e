"""The model of one rendered project: derive(answers) -> everything the templates need beyond the
raw answers (`dp` in templates). Services come from services.Service; environments from
environments.PROFILES; pins and names from catalogue."""

from __future__ import annotations

import json
import re
from typing import Any

from .answers import exec_form, memory_mib
from .catalogue import (
    APP_UID, BASE_IMAGE_ARGS, CI_COPIER, CI_LINTERS, CI_PLATFORMS, CI_SCANNER, GITHUB_ACTIONS, GITLAB_DOCKER, DATABASES, EXAMPLE_DEPENDENCIES, IMAGES, OPERATOR_SECRETS, PROXIES, PROXY_HTTP_PORT, PROXY_HTTPS_PORT, PROXY_OPS_PORT,
    HSTS_MAX_AGE, PIDS, REQUEST_METRICS, RUNTIMES, SECRETS_GID, SECURITY_HEADERS, SIZES, TLS12_CIPHERS, TOOLS, example_dependencies, example_lock_key, image_ref, image_var,
)
from .compliance import audit_plan
from .environments import ENVIRONMENTS, PROFILES, PUBLISHED_INTERNALS, host_ports, limits, replicas
from .services import Alias, Service
from .kubernetes import STORE_KEYS, cloudnative_environments, kubernetes_model
from .rotation import rotation_plan
from .swarm import swarm_model

# Every health check has a start period: its failures then do not count, and on Docker Engine 25+
# the check runs every START_INTERVAL meanwhile (compose.engine-25.yaml), so a container is healthy
# a quarter of a second after it is ready instead of after its first interval. Only while starting:
# once a check passes (or the start period ends) the interval applies: there, INTERVAL_AT_REST for
# every service. Each check is an exec (runc, the shim, dockerd: about 80 ms of CPU however cheap
# its command), and a stack at rest checked every 5 s spent most of its CPU on them
# (docs/performance.md, "A stack at rest"). Older engines keep each service's own interval (5 s for
# the app, the proxy and the data services): with no start interval, it is how soon a start is seen.
HEALTH_EVERY_5S = {"interval": "5s", "timeout": "5s", "retries": 3, "start_period": "30s"}
HEALTH_EVERY_15S = {"interval": "15s", "timeout": "5s", "retries": 3, "start_period": "30s"}
START_INTERVAL = "250ms"
INTERVAL_AT_REST = "15s"
# The BuildKit secret of the build's credentials: BUILD_ENV_FILE on the build host, none by default
# (/dev/null: empty). docker/build-env.sh gives it to the steps that fetch dependencies.
BUILD_SECRET = "build_env"
# What each step that fetches dependencies mounts: the script that exports the secret, and the
# secret itself only in the dependency stages built when BUILD_ENV_FILE is set (named with the
# suffix "-credentials", chosen by the build argument BUILD_ENV_STAGE that Compose derives from it):
# on Engine 26 a secret mount starts its step late, in proportion to the base image (1-2 s on
# Node's: docs/performance.md), so builds without credentials leave it out of their graph.
BUILD_ENV_SCRIPT_MOUNT = "--mount=type=bind,source=docker/build-env.sh,target=/tmp/build-env.sh"
BUILD_ENV_MOUNTS = f"--mount=type=secret,id={BUILD_SECRET} {BUILD_ENV_SCRIPT_MOUNT}"
BUILD_ENV_STAGE_ARG = "BUILD_ENV_STAGE"
BUILD_ENV_CREDENTIALS_SUFFIX = "-credentials"
BUILD_ENV_STAGES = [
    {"suffix": "", "mounts": BUILD_ENV_SCRIPT_MOUNT, "comment": [
        "The steps that fetch dependencies read the build's credentials (a private registry's token:",
        "BUILD_ENV_FILE, the BuildKit secret build_env) as environment variables (docker/build-env.sh)",
        "in this stage's copy named -credentials, built in its place when BUILD_ENV_FILE is set (on Docker",
        "Engine 26 a secret mount delays its step: builds without credentials leave it out). No layer",
        "keeps them."]},
    {"suffix": BUILD_ENV_CREDENTIALS_SUFFIX, "mounts": BUILD_ENV_MOUNTS, "comment": [
        "The same with the build's credentials mounted: built instead when BUILD_ENV_FILE is set."]},
]
# The Debian packages a build argument lists (BUILD_PACKAGES for the build's stages, RUNTIME_PACKAGES
# for the runtime) come in a stage SIDE-system-packages, which a stage starts from (ref) only when the
# list is set: an empty list (the default) costs no step (Dockerfile.system-packages.jinja).
SYSTEM_PACKAGES = {
    "build": ["BUILD_PACKAGES: in the build's stages only, never in the runtime image. Those stages start from",
              "build-system-packages when the list is set, else from the image itself."],
    "runtime": ["RUNTIME_PACKAGES: shared libraries the dependencies load at run time, without their -dev",
                "packages. The runtime starts from runtime-system-packages when the list is set, else from the image."],
}


def system_packages(side: str) -> dict[str, str]:
    arg, stage = f"{side.upper()}_PACKAGES", f"{side}-system"
    return {"arg": arg, "stage": stage, "ref": f"{stage}${{{arg}:+-packages}}",
            "comment": "\n".join(f"# {line}" for line in SYSTEM_PACKAGES[side])}


# A host job that needs no privilege, started by root (cron, supervisord): util-linux's setpriv
# empties the bounding and inheritable sets before the exec, so root keeps no capability and cannot
# regain one (no_new_privs); nice 10 as the systemd units.
CAPLESS_COMMAND = "setpriv --no-new-privs --bounding-set=-all --inh-caps=-all nice -n 10"


def http_check(*argv: str, **timing: Any) -> dict[str, Any]:
    return {"test": ["CMD", *argv], **HEALTH_EVERY_15S, **timing}


def wget_check(url: str, **timing: Any) -> dict[str, Any]:
    return http_check("wget", "-q", "-O", "/dev/null", url, **timing)


# What a check says when the app answers on the loopback address only: the proxy, the other
# containers and Docker's port mapping reach it on the container's own address.
LOOPBACK_ONLY = "the app answers on localhost only, not on {own}, where the proxy reaches it: make it listen on all addresses, {how}"
LISTEN_ON_ALL = {"python": "e.g. uvicorn --host 0.0.0.0, gunicorn --bind 0.0.0.0:{port}",
                 "node": "e.g. listen({port}) with no host, or the host 0.0.0.0",
                 "go": "e.g. ListenAndServe on :{port}, not localhost:{port}"}


def app_healthcheck(runtime: str, port: int, path: str) -> list[str]:
    """A health check that needs no curl: the runtime itself asks the app, at the container's own
    address (its hostname's in /etc/hosts), where the proxy reaches it, with the Host header
    127.0.0.1:PORT (as when it asked the loopback address: host allow-lists keep working). Passes on 200 or 204 (busybox's
    wget takes no other 2xx; urlopen raises on 4xx/5xx). An app that answers on localhost only
    fails, saying so: Docker keeps the check's output (scripts/lib/release.sh shows it).
    It runs every few seconds in every replica (every 250 ms while a replica starts, failing or
    not), so the answer is read first by the cheapest means of each runtime (Python: a socket, no
    site, no urllib; Node: http.get, not fetch: about half the CPU each, docs/performance.md): a
    2xx passes, a 4xx or 5xx fails with the full check's words. No answer within 2 s fails at once
    (asking again would outlast Docker's 5 s timeout, whose message would replace the check's); any
    other outcome (a redirect, a refused connection) is judged again by the full check, which
    follows redirects and says what went wrong."""
    how = LISTEN_ON_ALL[runtime].format(port=port)
    if runtime == "python":
        request = f"GET {path} HTTP/1.1\\r\\nHost: 127.0.0.1:{port}\\r\\nConnection: close\\r\\n\\r\\n"
        code = "\n".join([
            "import socket,sys",
            # Bytes: a str name would import the idna codec (about 7 ms of CPU).
            "try:own=socket.gethostbyname(socket.gethostname().encode())",
            "except OSError:own='127.0.0.1'",
            "said=b''",
            "try:",
            f" c=socket.socket();c.settimeout(2);c.connect((own,{port}));c.sendall(b'{request}')",
            # Read to the end, so that the app sees the connection closed, not reset.
            " for got in iter(lambda:c.recv(65536),b''):said=said or got",
            # No answer in time: asking again would outlast Docker's timeout (5 s), which would
            # then replace this message with its own.
            "except socket.timeout:",
            f" if not said:sys.exit('no answer at %s:{port}: timed out' % own)",
            "except OSError:pass",
            "if said[:5]==b'HTTP/' and said[9:10]==b'2':sys.exit()",
            f"if said[:5]==b'HTTP/' and said[9:10] in (b'4',b'5'):sys.exit('{path} answered %s' % said[9:12].decode())",
            "import urllib.request as r",
            f"ask=lambda host:r.urlopen(r.Request('http://'+host+':{port}{path}',headers={{'Host':'127.0.0.1:{port}'}}),timeout=2).status//100==2",
            "try:sys.exit(not ask(own))",
            f"except r.HTTPError as e:sys.exit('{path} answered %s' % e.code)",
            "except OSError as e:reason=e",
            "try:ask('localhost')",
            "except r.HTTPError:pass",
            f"except OSError:sys.exit('no answer at %s:{port}: %s' % (own,getattr(reason,'reason',reason)))",
            "sys.exit('" + LOOPBACK_ONLY.format(own="'+own+'", how=how) + "')",
        ])
        # -I: nothing from the environment or the working directory (the app's own modules) is
        # imported; -S: no site-packages, the check needs the standard library only.
        return ["CMD", "python", "-I", "-S", "-c", code]
    if runtime == "node":
        code = "\n".join([
            "const fail=m=>{console.error(m);process.exit(1)};",
            f"const ask=h=>fetch('http://'+h+':{port}{path}',{{headers:{{host:'127.0.0.1:{port}'}},signal:AbortSignal.timeout(2000)}});",
            f"const judge=own=>ask(own).then(r=>r.ok?process.exit(0):fail('{path} answered '+r.status),",
            "e=>ask('127.0.0.1').catch(()=>ask('[::1]'))",
            ".then(()=>fail('" + LOOPBACK_ONLY.format(own="'+own+'", how=how) + "'),",
            f"()=>fail('no answer at '+own+':{port}: '+(e.cause||e).message)));",
            "const late=new Error('timed out');",
            "require('dns').lookup(require('os').hostname(),{family:4},(e,own)=>{own=e?'127.0.0.1':own;",
            f"require('http').get({{host:own,port:{port},path:'{path}',headers:{{host:'127.0.0.1:{port}'}},agent:false,timeout:2000}},",
            "r=>r.statusCode>=200&&r.statusCode<300?r.resume().on('end',()=>process.exit(0)):",
            f"r.statusCode>=400?fail('{path} answered '+r.statusCode):(r.resume(),judge(own)))",
            f".on('timeout',function(){{this.destroy(late)}}).on('error',e=>e===late?fail('no answer at '+own+':{port}: timed out'):judge(own))}});",
        ])
        return ["CMD", "node", "-e", code]
    # Go images run from scratch with busybox (Dockerfile): sh, cat and wget, and no resolver to
    # count on (a static busybox may have none): the address comes from /etc/hosts, read by sh. No
    # wget -T (it crashes Debian's static busybox 1.35): Docker's timeout bounds the check. No
    # double quote either: hadolint misreads a JSON CMD with escaped ones (DL3025).
    script = "\n".join([
        f"path={path}; own=127.0.0.1; name=$(cat /etc/hostname)",
        "while read -r ip names; do case $ip in *:*) continue ;; esac",
        "  for n in $names; do case $n in $name) own=$ip; break 2 ;; esac; done; done </etc/hosts",
        f"said=$(wget -S -O /dev/null --header 'Host: 127.0.0.1:{port}' http://$own:{port}$path 2>&1) && exit 0",
        "case $said in *HTTP/*) echo $path answered ${said##*returned error: } >&2; exit 1 ;; esac",
        f"case $(wget -S -O /dev/null http://127.0.0.1:{port}$path 2>&1) in",
        "  *HTTP/*) echo '" + LOOPBACK_ONLY.format(own="'$own'", how=how) + "' >&2 ;;",
        f"  *) echo no answer at $own:{port}: ${{said##*wget: }} >&2 ;; esac",
        "exit 1",
    ])
    return ["CMD", "sh", "-c", script]


def cron_daily(hh_mm: str) -> str:
    hour, minute = hh_mm.split(":")
    return f"{int(minute)} {int(hour)} * * *"


class Facts:
    """The answers, normalised, and what follows from them directly."""

    def __init__(self, answers: dict[str, Any]):
        self.answers = answers
        self.runtime = answers["runtime"]
        self.slug = answers["project_slug"]
        self.app_port = int(answers["app_port"])
        self.proxy = answers["proxy"]
        self.database = answers["database"]
        self.db = dict(DATABASES[self.database], name=self.database) if self.database != "none" else None
        if self.database == "postgres" and "kubernetes" in (answers.get("orchestrators") or []):
            # Kubernetes' backup CronJob dumps over the network: the backup role gets a password there
            # (on Compose it logs in over the db container's socket, and no container reads the file).
            self.db["passwords"] = dict(self.db["passwords"], backup="db_backup_password")
        self.cache = answers["cache"] == "redis"
        self.monitored = answers["monitoring"] != "none"
        self.with_logs = answers["monitoring"] == "prometheus-loki"
        self.migrate = bool(self.db and (answers.get("migrate_command") or "").strip())
        self.tls = answers.get("tls", "none")
        self.acme = self.tls == "acme"
        self.blue_green = answers.get("deploy_strategy") == "blue-green"
        self.environments = [env for env in ENVIRONMENTS if env in answers["environments"]]
        # Targets beyond Compose on one host (answers files before `orchestrators` existed: none).
        self.orchestrators = list(answers.get("orchestrators") or [])
        self.alert_receiver = (answers.get("alert_receiver") or "none") if self.monitored else "none"
        # Alertmanager reads a credential: the webhook URL, or an SMTP password when there is a user.
        self.alert_receiver_secrets = self.alert_receiver == "webhook" or (
            self.alert_receiver == "email" and bool((answers.get("alert_smtp_username") or "").strip()))
        self.app_limits = (float(answers["app_cpus"]), memory_mib(answers["app_memory"]))
        self.app_replicas = int(answers["app_replicas"])
        # Where the app serves Prometheus metrics ("": nowhere; earlier answers files: /metrics).
        self.metrics_path = answers.get("metrics_path", "/metrics") or ""
        # Where Prometheus asks: the metrics port when the app serves metrics (app_port unless it
        # has a metrics server of its own), else the app port, whose health path the blackbox probes.
        self.metrics_port = int(answers.get("metrics_port") or self.app_port)
        self.scrape_port = self.metrics_port if self.metrics_path else self.app_port
        # The ports the app listens on: its own, and its metrics server's when it has one.
        self.app_ports = [str(port) for port in sorted({self.app_port, self.scrape_port})]
        self.hsts_subdomains = bool(answers.get("hsts_include_subdomains"))
        # Grafana behind the public proxy (an answer), or on the host's loopback only.
        self.grafana_public = self.monitored and bool(answers.get("grafana_public"))
        # The rendered pipeline's platform (answers files before `ci` existed: none).
        self.ci = answers.get("ci") or "none"

    def tls_in(self, env: str) -> bool:
        """TLS ends at the proxy in env."""
        return PROFILES[env]["tls"] and self.tls != "none"

    def domain(self, env: str) -> str:
        question = PROFILES[env]["domain_question"]
        return (self.answers.get(question) if question else None) or "localhost"

    def host_ports(self, env: str) -> dict[str, int]:
        return host_ports(PROFILES[env], self.slug)

    def probed(self, env: str) -> bool:
        """The blackbox exporter probes env's certificate."""
        return self.monitored and self.tls_in(env)

    def blackbox_in(self, env: str) -> bool:
        """The blackbox exporter runs in env: a certificate to probe, or an app without metrics
        whose replicas it probes on the health path."""
        return self.monitored and (self.tls_in(env) or not self.metrics_path)


def signals(f: Facts) -> dict[str, Any]:
    """The app's signals for Prometheus: availability (a series that is 1 while a replica answers),
    and error ratio and latency where some metrics have them (REQUEST_METRICS), as PromQL."""
    source = "app" if f.metrics_path else (f.proxy if f.proxy in REQUEST_METRICS else None)
    result: dict[str, Any] = {
        "source": source,
        "availability": 'up{job="app"}' if f.metrics_path else 'probe_success{job="app"}',
        "scraped": bool(f.metrics_path),
    }
    # A replica's series for the rule tests (promtool).
    result["test_availability"] = result["availability"][:-1] + f', instance="10.0.0.2:{f.scrape_port}"}}'
    if source:
        m = REQUEST_METRICS[source]
        result.update(
            errors=(f'sum(rate({m["requests"]}{{{m["labels"]}, {m["code"]}=~"5.."}}[5m]))\n'
                    f'  / sum(rate({m["requests"]}{{{m["labels"]}}}[5m]))'),
            latency_p95=f'histogram_quantile(0.95, sum by (le) (rate({m["duration"]}{{{m["labels"]}}}[5m])))',
            requests_rate=f'sum(rate({m["requests"]}{{{m["labels"]}}}[5m]))',
            errors_rate=f'sum(rate({m["requests"]}{{{m["labels"]}, {m["code"]}=~"5.."}}[5m]))',
            # Series for the rule tests (promtool): a 200, a 500, a histogram bucket.
            test_ok=f'{m["requests"]}{{{m["labels"]}, {m["code"]}="200"}}',
            test_error=f'{m["requests"]}{{{m["labels"]}, {m["code"]}="500"}}',
            test_bucket=f'{m["duration"]}{{{m["labels"]}, le="%s"}}',
        )
    return result


# --- secrets: name -> the services that read it -------------------------------------------------------

def secret_readers(f: Facts) -> dict[str, list[str]]:
    secrets: dict[str, list[str]] = {}
    if f.db:
        # One password per role (catalogue.DATABASES "passwords"); db-roles sets them all.
        readers = {"admin": ["db"], "owner": ["migrate"] if f.migrate else [], "app": ["app"],
                   "exporter": ["db-exporter"] if f.monitored else [],
                   # Backups run in the db container, or in the dump's client (scripts/lib/db.sh);
                   # PostgreSQL's on the db container's socket, without the password.
                   "backup": [] if f.database == "postgres" else ["db"] + ([f.db["dump_client"]] if f.db.get("dump_client") else []),
                   "archive": ["db-archive"]}  # MariaDB's binary log archiver (Compose target)
        if f.database == "mariadb":
            readers["owner"].append("db")  # the image creates the owner `app` on a new volume
        for role, name in f.db["passwords"].items():
            secrets[name] = readers[role] + ["db-roles"]
    if f.cache:
        secrets["redis_password"] = ["app", "cache"] + (["cache-exporter"] if f.monitored else [])
    if f.monitored:
        secrets["grafana_admin_password"] = ["grafana"]
        # Basic auth on Prometheus' and Alertmanager's APIs: a password for their clients, and the
        # web.config.file with its bcrypt hash (made from it by scripts/init-env.sh).
        secrets["prometheus_password"] = ["prometheus", "grafana"]
        secrets["prometheus_web_config"] = ["prometheus"]
        secrets["alertmanager_password"] = ["prometheus"]
        secrets["alertmanager_web_config"] = ["alertmanager"]
    if f.alert_receiver == "webhook":
        secrets["alert_webhook_url"] = ["alertmanager"]
    if f.alert_receiver == "email" and (f.answers.get("alert_smtp_username") or "").strip():
        secrets["alert_smtp_password"] = ["alertmanager"]
    return secrets


# --- the services ---------------------------------------------------------------------------------------

COLOURS = ("blue", "green")  # the first serves before any deploy


def colour_names(colour: str) -> dict[str, str]:
    """The naming rule of a colour: its Compose service and the env file keys of its version and
    replica count. Scripts get these as data (scripts/lib/common.sh), never the rule."""
    prefix = f"APP_{colour.upper()}"
    return {"colour": colour, "service": f"app-{colour}", "version_var": f"{prefix}_VERSION",
            "replicas_var": f"{prefix}_REPLICAS"}


def app_services(f: Facts, reads: dict[str, list[str]]) -> list[Service]:
    """The app as two colours (the proxy routes to one; a deploy starts the other, see
    scripts/lib/release.sh), and the one-off migration container."""
    def database_env(role: str) -> dict[str, str]:
        return {
            "DATABASE_SCHEME": f.db["scheme"], "DATABASE_HOST": "db", "DATABASE_PORT": str(f.db["port"]),
            "DATABASE_NAME": "app", "DATABASE_USER": f.db["roles"][role],
            "DATABASE_PASSWORD_FILE": f"/run/secrets/{f.db['passwords'][role]}",
        } if f.db else {}
    cache_env = {
        "REDIS_HOST": "cache", "REDIS_PORT": "6379", "REDIS_PASSWORD_FILE": "/run/secrets/redis_password",
    } if f.cache else {}
    depends_on = {}
    if f.migrate:
        depends_on["migrate"] = "service_completed_successfully"
    if f.db:
        depends_on["db"] = "service_healthy"
        depends_on["db-roles"] = "service_completed_successfully"
    if f.cache:
        depends_on["cache"] = "service_healthy"
    networks = ["edge"] + (["backend"] if f.db or f.cache else []) + (["scrape-app"] if f.monitored else [])
    services = []
    for colour in COLOURS:
        names = colour_names(colour)
        version = "${%s:-dev}" % names["version_var"]
        builds = colour == COLOURS[0]  # both colours run the same image: one builds it
        services.append(Service(
            name=names["service"], role="app", colour=colour, image="${APP_IMAGE:-%s}:%s" % (f.answers["image_name"], version),
            base=Alias("app"),
            comment=("The app in two colours: the proxy sends traffic to one (named in .deploy/<env>/proxy/); a\n"
                     "deploy starts the new version in the other and switches the proxy once it is healthy\n"
                     "(scripts/deploy.sh, scripts/rollback.sh).") if builds else "",
            notes={} if builds else {
                "pull_policy": "scripts/deploy.sh pulls or builds the image first; with 0 replicas there is nothing to pull."},
            # Base images from the same settings as every other image (X_IMAGE, IMAGE_MIRROR).
            # The build's credentials reach the dependency steps only (docker/build-env.sh);
            # BUILD_NETWORK=host lets them reach a registry on the build host's loopback.
            build={"context": ".", "target": "runtime",
                   "args": {"APP_VERSION": version, BUILD_ENV_STAGE_ARG: f"${{BUILD_ENV_FILE:+{BUILD_ENV_CREDENTIALS_SUFFIX}}}",
                            **{BASE_IMAGE_ARGS[key]: image_ref(key) for key in RUNTIMES[f.runtime]["images"]}},
                   "secrets": [BUILD_SECRET], "network": "${BUILD_NETWORK:-default}"}
            if builds else None,
            pull_policy=None if builds else "never",
            init=True,
            expose=f.app_ports,
            # APP_VERSION from the same variable as the image tag: the env file's copy must not win.
            environment={"PORT": str(f.app_port), "APP_VERSION": version, **database_env(app_role(f)), **cache_env},
            secrets=[name for name, readers in reads.items() if "app" in readers],
            # Compose interpolates "$": the image's check, escaped.
            healthcheck={"test": [arg.replace("$", "$$") for arg in app_healthcheck(f.runtime, f.app_port, f.answers["health_path"])],
                         **HEALTH_EVERY_5S},
            depends_on=depends_on,
            # A colour is "app" to Prometheus (its scrape network), never to the proxy.
            networks={net: {"aliases": ["app"]} if net == "scrape-app" else {} for net in networks},
            env_file=True,
            replicas={},  # set per environment by derive()
        ))
    if f.migrate:
        services.append(Service(
            name="migrate", role="migrate", image="${APP_IMAGE:-%s}:${APP_VERSION:-dev}" % f.answers["image_name"],
            base=Alias("app"),
            comment="One-off: applies migrations before the app starts (scripts/migrate.sh runs it on demand).",
            command=exec_form_list(f.answers["migrate_command"]),
            notes={"healthcheck": "A one-off, not a server: the image's HTTP health check does not apply.",
                   "environment": "As the schema's owner: migrations change the schema, the app only the data."},
            environment={"PORT": str(f.app_port), "APP_VERSION": "${APP_VERSION:-dev}", **database_env("owner")},
            secrets=[name for name, readers in reads.items() if "migrate" in readers],
            healthcheck={"disable": True},
            depends_on={"db": "service_healthy", "db-roles": "service_completed_successfully"},
            networks=["backend"],
            env_file=True,
            one_off=True,
        ))
    return services


def app_role(f: Facts) -> str:
    """The database role the app logs in as: data access only, unless there is no migrate_command
    (then the app must create its own schema and logs in as the owner; docs/security.md)."""
    return "app" if f.migrate else "owner"


def db_client_service(f: Facts, reads: dict[str, list[str]], name: str, **spec: Any) -> Service:
    """A client of the database in the database's image, as its user, reading the secrets `reads`
    gives it (db-roles, db-archive)."""
    uid = f.db["uid"]
    return Service(name=name, role=name, image=image_ref(f.db["image"]), user=f"{uid}:{uid}", group_add=[str(SECRETS_GID)],
                   tmpfs=["/tmp"], secrets=[secret for secret, readers in reads.items() if name in readers], **spec)


def db_roles_service(f: Facts, reads: dict[str, list[str]]) -> Service:
    return db_client_service(
        f, reads, "db-roles",
        comment=("One-off: makes the database's roles and their passwords (owner, app, exporter, backup;\n"
                 "MariaDB's archive user) and gives each what it needs and no more (config/db/roles.sh).\n"
                 "Idempotent: every deploy runs it, so that an existing database gets them too\n"
                 "(scripts/db-roles.sh runs it on demand)."),
        notes={"healthcheck": "A one-off, not a server."},
        entrypoint=["sh", "/etc/db-roles/roles.sh"],
        volumes=["./config/db:/etc/db-roles:ro"],
        healthcheck={"disable": True},
        depends_on={"db": "service_healthy"},
        networks=["backend"],
        one_off=True,
    )


def exec_form_list(command: str) -> list[str]:
    return json.loads(exec_form(command))


def proxy_service(f: Facts) -> Service:
    """The reverse proxy: load balancer and TLS terminator. Its configuration per environment is
    mounted from config/<proxy>/<env>/, the active colour from .deploy/<env>/proxy/."""
    control = PROXIES[f.proxy]
    ops = PROXY_OPS_PORT
    networks = ["edge"] + (["scrape-proxy"] if f.monitored else []) + (["grafana-web"] if f.grafana_public else [])
    timing = {**HEALTH_EVERY_5S, "start_period": "20s"}
    if f.proxy == "nginx":
        service = Service(
            name="proxy", role="proxy", image=image_ref("nginx"), user="101:101", group_add=[str(SECRETS_GID)],
            tmpfs=["/tmp", "/var/cache/nginx"],
            notes={"entrypoint": "nginx itself, without the image's entrypoint scripts (they rewrite files we mount read-only)."},
            entrypoint=["nginx", "-c", f"{control['mount']}/nginx.conf", "-g", "daemon off;"],
            healthcheck=http_check("curl", "-fsS", "-o", "/dev/null", f"http://127.0.0.1:{ops}/health", **timing),
            networks=networks,
        )
    elif f.proxy == "caddy":
        service = Service(
            name="proxy", role="proxy", image=image_ref("caddy"),
            command=["caddy", "run", "--config", f"{control['mount']}/Caddyfile", "--adapter", "caddyfile"],
            healthcheck=wget_check(f"http://127.0.0.1:{ops}/health", **timing),
            networks=networks,
        )
        service.tmpfs = ["/tmp", "/config"] if f.acme else ["/tmp", "/config", "/data"]
    else:
        command = [
            f"--entrypoints.web.address=:{PROXY_HTTP_PORT}",
            f"--entrypoints.websecure.address=:{PROXY_HTTPS_PORT}",
            f"--entrypoints.ops.address=:{ops}",
            "--ping.entrypoint=ops",
            "--metrics.prometheus.entrypoint=ops",
            f"--providers.file.directory={control['active']}",
            "--providers.providersThrottleDuration=500ms",
            "--api=true",
            "--api.dashboard=false",
            "--accesslog=true",
            "--log.level=INFO",
            "--global.sendanonymoususage=false",
            "--global.checknewversion=false",
        ]
        if f.acme:
            command += [
                f"--certificatesresolvers.acme.acme.email={f.answers['acme_email']}",
                "--certificatesresolvers.acme.acme.storage=/data/acme.json",
                "--certificatesresolvers.acme.acme.httpchallenge.entrypoint=web",
            ]
        service = Service(
            name="proxy", role="proxy", image=image_ref("traefik"), tmpfs=["/tmp"],
            notes={"command": (
                "Static configuration as flags. Routes (a copy of config/traefik/<env>/dynamic.yml) and the\n"
                "active colour are files in the watched directory, applied within 0.5 s of a change (the\n"
                "providers' throttle; 2 s by default); the read-only API answers on the ops\n"
                "port from loopback only (maintenance mode is confirmed there); a switch is confirmed from\n"
                "the host through the HTTP port, by the control file's probe route.")},
            command=command,
            healthcheck=wget_check(f"http://127.0.0.1:{ops}/ping", **timing),
            networks=networks,
        )
    if f.proxy != "nginx":
        if f.acme:
            # ACME certificates live in a volume the image creates root-owned: UID 0, no capabilities.
            service.user = "0:0"
            service.volumes = ["proxy-data:/data"]
            service.notes["user"] = (f"ACME certificates live in the proxy-data volume, which the image creates root-owned:\n"
                                     f"{f.proxy.capitalize()} runs as UID 0 there, but with no capabilities at all.")
        else:
            service.user = f"65534:{SECRETS_GID}"
    return service


def database_service(f: Facts, reads: dict[str, list[str]]) -> Service:
    db = f.db
    common = dict(
        name="db", role="db", image=image_ref(db["image"]), user=f"{db['uid']}:{db['uid']}", group_add=[str(SECRETS_GID)],
        tmpfs=["/tmp", db["run_dir"]], stop_grace_period="60s",
        notes={"user": f"Runs as the image's {'postgres' if f.database == 'postgres' else 'mysql'} user from the start: "
                       "no root entrypoint, no capabilities."},
        secrets=[name for name, readers in reads.items() if "db" in readers],
        volumes=[f"db-data:{db['data_dir']}"],
        networks=["backend"] + (["archive"] if f.database == "mariadb" else []) + (["dump"] if db.get("dump_client") else [])
        + (["scrape-db"] if f.monitored else []),
    )
    timing = {**HEALTH_EVERY_5S, "retries": 10}
    if f.database == "postgres":
        service = Service(
            **common, shm_size="256m",
            environment={"POSTGRES_USER": "app", "POSTGRES_DB": "app", "POSTGRES_PASSWORD_FILE": "/run/secrets/db_password",
                         "PGDATA": db["data_dir"]},
            healthcheck={"test": ["CMD", "pg_isready", "-h", "127.0.0.1", "-U", "app", "-d", "app"], **timing},
        )
        service.notes["healthcheck"] = "Over TCP: the entrypoint's temporary init server listens on the socket only."
        archive = db["archive"]
        service.compose_only = {
            "command": ["postgres", "-c", "archive_mode=on", "-c", f"archive_command=sh {archive['script']} %p %f",
                        "-c", f"archive_timeout=${{DB_ARCHIVE_TIMEOUT:-{archive['timeout_default']}}}"],
            "volumes": [f"{archive['volume']}:{archive['home']}", f"./config/db/archive-wal.sh:{archive['script']}:ro"],
        }
        service.notes["command"] = ("Point-in-time recovery: each finished WAL segment goes to the db-wal volume, which\n"
                                    "outlives db-data; a quiet database still archives every DB_ARCHIVE_TIMEOUT (the RPO).")
        return service
    service = Service(
        **common,
        environment={"MARIADB_USER": "app", "MARIADB_DATABASE": "app", "MARIADB_PASSWORD_FILE": "/run/secrets/db_password",
                     "MARIADB_ROOT_PASSWORD_FILE": "/run/secrets/db_root_password", "MARIADB_AUTO_UPGRADE": "1"},
        healthcheck={"test": ["CMD", "healthcheck.sh", "--connect", "--innodb_initialized"], **timing},
    )
    service.compose_only = {
        "command": ["mariadbd", "--log-bin=binlog", "--server-id=1", "--binlog-format=ROW", "--sync-binlog=1",
                    "--binlog-row-image=MINIMAL", f"--tmpdir={db['data_dir']}"],
    }
    service.notes["command"] = ("Point-in-time recovery: a binary log of row changes, durable at each commit, which\n"
                                "db-archive streams into the db-binlog volume as it is written (db-data may be lost).\n"
                                "Each change carries the row's key and the columns it sets, not the whole row before\n"
                                "and after: a fraction of the archive's size.\n"
                                "Temporary files (a large transaction's binary log cache, sort files) go to the data\n"
                                "volume: on the /tmp tmpfs they would count against the memory limit.")
    return service


def db_archive_service(f: Facts, reads: dict[str, list[str]]) -> Service:
    """MariaDB's binary log archiver (Compose target): a client of the server, as a replica is."""
    archive = f.db["archive"]
    return db_client_service(
        f, reads, "db-archive",
        comment=("Point-in-time recovery: streams the server's binary log, as it is written, into the db-binlog\n"
                 "volume (config/db/archive-binlog.sh), which outlives db-data. A client with replication\n"
                 "rights only; it reconnects after any interruption."),
        entrypoint=["sh", archive["script"]],
        volumes=[f"{archive['volume']}:{archive['home']}", f"./config/db/{archive['file']}:{archive['script']}:ro"],
        notes={"healthcheck": "Healthy while mariadb-binlog streams (its pid file is the archiver's own), and for\n"
                              "2 minutes while it reconnects (a restarting or recreated server)."},
        healthcheck={"test": ["CMD-SHELL", 'kill -0 "$$(cat /tmp/mariadb-binlog.pid)" 2>/dev/null'
                                            ' || [ -n "$$(find /tmp/reconnecting -mmin -2 2>/dev/null)" ]'], **HEALTH_EVERY_5S},
        depends_on={"db": "service_healthy", "db-roles": "service_completed_successfully"},
        networks=["archive"],
    )


def db_backup_service(f: Facts, reads: dict[str, list[str]]) -> Service:
    """The backup's dump client (Compose target): scripts/backup.sh runs it, nothing starts it."""
    return db_client_service(
        f, reads, f.db["dump_client"],
        comment=("One-off: scripts/backup.sh runs the dump, its row counter and gzip here (scripts/lib/db.sh):\n"
                 "on CPUs of its own, not the database's, and only the compressed dump leaves the container.\n"
                 "In a profile of its own, so that `up` never starts it; as the backup user, read-only."),
        notes={"healthcheck": "A one-off, not a server."},
        profiles=["backup"],
        healthcheck={"disable": True},
        networks=["dump"],
        one_off=True,
        unlogged=True,
    )


def cache_service(f: Facts) -> Service:
    return Service(
        name="cache", role="cache", image=image_ref("redis"), user="999:999", group_add=[str(SECRETS_GID)],
        notes={"command": "The password goes from the secret file into a private config file on a tmpfs: never into the\n"
                          "environment or onto redis-server's command line (ps shows that)."},
        tmpfs=["/run/redis:mode=0700,uid=999,gid=999"],
        command=["sh", "-c", "umask 077 && printf 'requirepass %s\\n' \"$$(cat /run/secrets/redis_password)\" >/run/redis/redis.conf"
                 " && exec redis-server /run/redis/redis.conf --appendonly yes --dir /data"],
        secrets=["redis_password"],
        volumes=["cache-data:/data"],
        healthcheck={"test": ["CMD-SHELL", 'REDISCLI_AUTH="$$(cat /run/secrets/redis_password)" redis-cli ping | grep -q PONG'],
                     **HEALTH_EVERY_5S, "retries": 5},
        networks=["backend"] + (["scrape-cache"] if f.monitored else []),
    )


# --- networks: who may talk to whom -------------------------------------------------------------------
# Two services share a network only if one must reach the other: the proxy and the app (edge), the
# app and its data (backend), the monitoring core (monitoring: Prometheus, Alertmanager, Grafana,
# Loki, Alloy), and one scrape network per target, holding Prometheus, the target and its exporter
# (scrape-*). So the app and the proxy never reach Alertmanager, Loki or Grafana, the proxy never
# reaches the database or cache, and an exporter reaches nothing but its target.
NETWORK_ORDER = ("edge", "backend", "archive", "dump", "monitoring", "outbound", "grafana-web", "scrape-app", "scrape-proxy",
                 "scrape-db", "scrape-cache", "scrape-host")
NETWORK_PURPOSE = {
    "edge": "the proxy and the app",
    "backend": "the app and its database and cache",
    "archive": "the database and its binary log archiver (db-archive)",
    "dump": "the database and the backups' dump client (db-backup)",
    "monitoring": "Prometheus, Alertmanager, Grafana, Loki and Alloy",
    "outbound": "Alertmanager's route out (notifications), and Grafana's loopback port when it is not public",
    "grafana-web": "Grafana and the proxy (Grafana is public)",
    "scrape-app": "Prometheus and the app's replicas (alias app)",
    "scrape-proxy": "Prometheus, the proxy and its exporter or prober",
    "scrape-db": "Prometheus, the database exporter and the database",
    "scrape-cache": "Prometheus, the cache exporter and the cache",
    "scrape-host": "Prometheus and the host's agents (node exporter, cAdvisor)",
}
# Networks with a route out in every environment (elsewhere only in dev, for its loopback ports):
# the proxy's and the app's, Alertmanager's for notifications, Grafana's for its port or the proxy.
OPEN_NETWORKS = ("edge", "outbound", "grafana-web")


def scrape_networks(f: Facts) -> list[str]:
    return ["scrape-app", "scrape-proxy"] + (["scrape-db"] if f.db else []) + (["scrape-cache"] if f.cache else []) + ["scrape-host"]


def grafana_admin(f: Facts) -> str:
    """Grafana's admin user: a name of the project's, not the "admin" that every scanner tries."""
    return f"{f.slug.replace('_', '-')}-admin"


def asks_for_credentials(url: str) -> dict[str, Any]:
    """A health check for a server behind basic auth: it answers, and asks for credentials (401).
    Sending them would put the password on a command line, which `ps` on the host shows."""
    return {"test": ["CMD-SHELL", f"wget -S -O /dev/null {url} 2>&1 | grep -q 'HTTP/1.[01] 401'"], **HEALTH_EVERY_15S}


def monitoring_services(f: Facts, reads: dict[str, list[str]]) -> list[Service]:
    services = [
        Service(
            name="prometheus", role="prometheus", image=image_ref("prometheus"), user=f"65534:{SECRETS_GID}",
            notes={"command": "Its API and UI ask for a password (web.config.file: secrets/ENV/prometheus_password's hash)."},
            command=["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus",
                     "--storage.tsdb.retention.time=${PROMETHEUS_RETENTION:-15d}", "--enable-feature=expand-external-labels",
                     "--web.config.file=/run/secrets/prometheus_web_config"],
            secrets=[name for name, readers in reads.items() if "prometheus" in readers],
            volumes=["./config/prometheus:/etc/prometheus:ro", "prometheus-data:/prometheus"],
            healthcheck=asks_for_credentials("http://127.0.0.1:9090/-/healthy"),
            # The monitoring core, and each scrape network: the only service on all of them.
            networks=["monitoring", *scrape_networks(f)],
        ),
        Service(
            name="alertmanager", role="alertmanager", image=image_ref("alertmanager"),
            user=f"65534:{SECRETS_GID}",
            notes={"command": "Its API (which creates silences) asks for a password (web.config.file), as Prometheus'.",
                   **({"secrets": "Receiver credentials: read from the file when an alert is sent, never from this file."}
                      if f.alert_receiver_secrets else {})},
            command=["--config.file=/etc/alertmanager/alertmanager.yml", "--storage.path=/alertmanager",
                     "--web.config.file=/run/secrets/alertmanager_web_config"],
            secrets=[name for name, readers in reads.items() if "alertmanager" in readers],
            volumes=["./config/alertmanager:/etc/alertmanager:ro", "alertmanager-data:/alertmanager"],
            healthcheck=asks_for_credentials("http://127.0.0.1:9093/-/healthy"),
            # Sends notifications out: its own network with a route, shared with no other service.
            networks=["monitoring", "outbound"],
        ),
        Service(
            name="grafana", role="grafana", image=image_ref("grafana"), user=f"472:{SECRETS_GID}", tmpfs=["/tmp"],
            notes={"environment": ("Served at /grafana/: through the proxy (grafana_public), or on the host's 127.0.0.1\n"
                                   "for an SSH tunnel. Its admin has a name of this project's, not \"admin\".")},
            environment={
                "GF_SECURITY_ADMIN_USER": grafana_admin(f), "GF_SECURITY_ADMIN_PASSWORD__FILE": "/run/secrets/grafana_admin_password",
                "GF_USERS_ALLOW_SIGN_UP": "false", "GF_AUTH_ANONYMOUS_ENABLED": "false",
                "GF_ANALYTICS_REPORTING_ENABLED": "false", "GF_ANALYTICS_CHECK_FOR_UPDATES": "false",
                "GF_SERVER_ROOT_URL": "%(protocol)s://%(domain)s/grafana/", "GF_SERVER_SERVE_FROM_SUB_PATH": "true",
            },
            secrets=[name for name, readers in reads.items() if "grafana" in readers],
            volumes=["./config/grafana/provisioning:/etc/grafana/provisioning:ro",
                     "./config/grafana/dashboards:/var/lib/grafana-dashboards:ro", "grafana-data:/var/lib/grafana"],
            healthcheck=wget_check("http://127.0.0.1:3000/api/health", retries=5),
            depends_on={"prometheus": "service_healthy"},
            # Public: grafana-web, the proxy's way in. Otherwise outbound, for its loopback port (a
            # network with a route out; Alertmanager, its other member, shares monitoring with it anyway).
            networks=["monitoring", "grafana-web" if f.grafana_public else "outbound"],
        ),
        Service(
            name="node-exporter", role="node-exporter", image=image_ref("node-exporter"), user="65534:65534",
            comment=("Host metrics without host access: CPU, memory, load and disk I/O are the host's inside a\n"
                     "container too; the filesystem is the one holding this project (metrics/ENV/, mounted for the\n"
                     "backup scripts' results). No host PID namespace, no mount of / (docs/security.md)."),
            command=["--collector.textfile.directory=/textfile"],
            healthcheck=wget_check("http://127.0.0.1:9100/metrics"),
            networks=["scrape-host"],
        ),
        Service(
            name="cadvisor", role="cadvisor", image=image_ref("cadvisor"), base=None,
            hardening={"privileged": True, "read_only": True, "security_opt": ["no-new-privileges:true"]},
            profiles=["host-agents"],
            comment=("Per-container metrics need the host's cgroups and Docker state: cAdvisor is privileged, which\n"
                     "is root on the host. So it is opt-in: COMPOSE_PROFILES=host-agents in env/ENV.env starts it\n"
                     "(docs/security.md, the accepted risk). Everything it mounts is read-only."),
            command=["--docker_only=true", "--housekeeping_interval=15s", "--store_container_labels=false",
                     "--whitelisted_container_labels=com.docker.compose.service,com.docker.compose.project"],
            volumes=["/:/rootfs:ro", "/var/run:/var/run:ro", "/sys:/sys:ro", "/var/lib/docker/:/var/lib/docker:ro"],
            devices=["/dev/kmsg"],
            healthcheck=wget_check("http://127.0.0.1:8080/healthz"),
            networks=["scrape-host"],
        ),
    ]
    if f.db:
        exporter = Service(
            name="db-exporter", role="db-exporter", image=image_ref(f.db["exporter"]), user=f"65534:{SECRETS_GID}",
            secrets=[name for name, readers in reads.items() if "db-exporter" in readers],
            healthcheck=wget_check(f"http://127.0.0.1:{f.db['exporter_port']}/metrics"),
            depends_on={"db": "service_healthy", "db-roles": "service_completed_successfully"},
            networks=["scrape-db"],
        )
        if f.database == "postgres":
            exporter.environment = {"DATA_SOURCE_URI": f"db:{f.db['port']}/app?sslmode=disable",
                                    "DATA_SOURCE_USER": f.db["roles"]["exporter"],
                                    "DATA_SOURCE_PASS_FILE": f"/run/secrets/{f.db['passwords']['exporter']}"}
        else:
            exporter.notes["entrypoint"] = "mysqld_exporter takes the password from its environment only: read it from the secret."
            # The process list counts each user's connections: BinlogArchiverDisconnected watches db-archive's.
            exporter.entrypoint = ["/bin/sh", "-c", f'MYSQLD_EXPORTER_PASSWORD="$$(cat /run/secrets/{f.db["passwords"]["exporter"]})" exec '
                                   f"/bin/mysqld_exporter --mysqld.address=db:{f.db['port']} --mysqld.username={f.db['roles']['exporter']}"
                                   " --collect.info_schema.processlist"]
        services.append(exporter)
    if f.cache:
        services.append(Service(
            name="cache-exporter", role="cache-exporter", image=image_ref("redis-exporter"), user=f"59000:{SECRETS_GID}",
            entrypoint=["/bin/sh", "-c", 'REDIS_PASSWORD="$$(cat /run/secrets/redis_password)" exec /redis_exporter --redis.addr=redis://cache:6379'],
            secrets=["redis_password"],
            healthcheck=wget_check("http://127.0.0.1:9121/metrics"),
            depends_on={"cache": "service_healthy"},
            networks=["scrape-cache"],
        ))
    if f.proxy == "nginx":
        services.append(Service(
            name="proxy-exporter", role="proxy-exporter", image=image_ref("nginx-exporter"), user="65534:65534",
            notes={"depends_on": (
                "The image is FROM scratch (no shell, no HTTP client) and defines no health check: Compose\n"
                "waits for it to run, and Prometheus' up{job=\"proxy\"} (ProxyDown) watches it. (An explicit\n"
                "`healthcheck: disable` would make `up --wait` refuse it.)")},
            command=[f"--nginx.scrape-uri=http://proxy:{PROXY_OPS_PORT}/stub_status"],
            depends_on={"proxy": "service_healthy"},
            networks=["scrape-proxy"],
        ))
    if f.with_logs:
        services += [
            Service(
                name="loki", role="loki", image=image_ref("loki"), user="10001:10001",
                command=["-config.file=/etc/loki/loki.yaml"],
                volumes=["./config/loki/loki.yaml:/etc/loki/loki.yaml:ro", "loki-data:/loki"],
                healthcheck=http_check("/busybox/wget", "-q", "-O", "/dev/null", "http://127.0.0.1:3100/ready",
                                       retries=5),
                networks=["monitoring"],
            ),
            Service(
                name="alloy", role="alloy", image=image_ref("alloy"), base=None,
                hardening={"read_only": True, "cap_drop": ["ALL"], "security_opt": ["no-new-privileges:true"]},
                notes={"user": ("Reads container logs through the Docker API (read-only socket mount): it runs as root,\n"
                                "with no capabilities beyond the socket (docs/security.md).")},
                user="0:0", tmpfs=["/tmp"],
                entrypoint=["/bin/alloy"],
                command=["run", "/etc/alloy/config.alloy", "--storage.path=/tmp/alloy", "--server.http.listen-addr=0.0.0.0:12345"],
                volumes=["./config/alloy/config.alloy:/etc/alloy/config.alloy:ro", "/var/run/docker.sock:/var/run/docker.sock:ro"],
                healthcheck=http_check("curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:12345/-/ready",
                                       retries=5),
                depends_on={"loki": "service_healthy"},
                networks=["monitoring"],
            ),
        ]
    probed = [env for env in f.environments if f.blackbox_in(env)]
    if probed:
        services.append(Service(
            name="blackbox-exporter", role="blackbox-exporter", image=image_ref("blackbox-exporter"), base=None,
            hardening={"read_only": True, "cap_drop": ["ALL"], "security_opt": ["no-new-privileges:true"]},
            comment=("Probes for Prometheus: " + " and ".join(
                (["the proxy's TLS certificate (CertificateExpiresSoon, TLSProbeFailed)"] if any(f.probed(e) for e in probed) else [])
                + ([f"each app replica's {f.answers['health_path']} (the app serves no metrics)"] if not f.metrics_path else []))
                + "."),
            user="65534:65534",
            command=["--config.file=/etc/blackbox/blackbox.yml"],
            healthcheck=wget_check("http://127.0.0.1:9115/-/healthy"),
            # It reaches what it probes: the app's replicas (scrape-app), the proxy (scrape-proxy).
            networks=[] if f.metrics_path else ["scrape-app"],
            only_in=None if probed == f.environments else probed,
            env_volumes={env: [f"./config/blackbox/{env}.yml:/etc/blackbox/blackbox.yml:ro"] for env in probed},
            # Prometheus' tls job finds the prober by this alias: only where there is a certificate.
            env_networks={env: {"scrape-proxy": {"aliases": ["tls-prober"]}} for env in probed if f.probed(env)},
        ))
    return services


def build_services(f: Facts) -> list[Service]:
    reads = secret_readers(f)
    services = app_services(f, reads)
    services.append(proxy_service(f))
    if f.db:
        services.append(database_service(f, reads))
        services.append(db_roles_service(f, reads))
        if f.database == "mariadb":
            services.append(db_archive_service(f, reads))
        if f.db.get("dump_client"):
            services.append(db_backup_service(f, reads))
    if f.cache:
        services.append(cache_service(f))
    if f.monitored:
        services += monitoring_services(f, reads)
    for service in services:
        service.pids = PIDS[service.role]
    return services


def per_environment(f: Facts, services: list[Service]) -> None:
    """What differs by environment: replicas, limits, host ports, mounts and secrets."""
    control = PROXIES[f.proxy]
    for env in f.environments:
        profile = PROFILES[env]
        count = replicas(profile, f.app_replicas)
        shared = "${APP_REPLICAS:-%d}" % count
        for service in services:
            size = f.app_limits if service.role in ("app", "migrate") else SIZES[service.role]
            service.limits[env] = limits(*size, profile["scale"])
            if f.monitored:
                service.cgroup_parent[env] = container_slice(f.slug, env, service.name)
            if service.role == "app":
                # Each colour's own count once deployed; before that APP_REPLICAS for the first, none for the other.
                default = shared if service.colour == COLOURS[0] else "0"
                service.replicas[env] = "${%s:-%s}" % (colour_names(service.colour)["replicas_var"], default)
            if service.role == "proxy":
                bind = "${BIND_ADDRESS:-%s}" % profile["bind_address"]
                host = f.host_ports(env)
                ports = [f"{bind}:${{HTTP_PORT:-{host['http']}}}:{PROXY_HTTP_PORT}"]
                if f.tls_in(env):
                    ports.append(f"{bind}:${{HTTPS_PORT:-{host['https']}}}:{PROXY_HTTPS_PORT}")
                service.ports[env] = ports
                service.env_volumes[env] = [f"./{control['config_dir']}/{env}:{control['mount']}:ro",
                                            f"./.deploy/{env}/proxy:{control['active']}:ro"]
                service.env_notes["volumes"] = ("Its configuration, and the active colour (switched by scripts/deploy.sh and\n"
                                                "scripts/rollback.sh).")
                if f.tls_in(env) and f.tls == "files":
                    service.env_secrets[env] = ["tls_cert", "tls_key"]
            if profile["publish_internals"]:
                published = published_port(f, service.name)
                if published:
                    key, port = published
                    service.ports[env] = [f"127.0.0.1:${{{key}:-{f.host_ports(env)[service.name]}}}:{port}"]
            if service.name == "grafana" and not f.grafana_public:
                # Not public: the host's loopback only, for an SSH tunnel (README).
                service.ports[env] = [f"127.0.0.1:${{GRAFANA_PORT:-{f.host_ports(env)['grafana']}}}:3000"]
            if service.name == "grafana" and f.grafana_public and f.tls_in(env):
                service.env_environment[env] = {"GF_SECURITY_COOKIE_SECURE": "true", "GF_SECURITY_COOKIE_SAMESITE": "strict"}
            if service.name == "prometheus":
                service.env_environment[env] = {"DEPLOY_ENV": env}
            if service.name == "node-exporter":
                # The backup scripts' results (scripts/backup.sh, verify-backup.sh) for the backup alerts,
                # and the filesystem that holds the project (DiskFilling).
                service.env_volumes[env] = [f"./metrics/{env}:/textfile:ro"]


def container_slice(slug: str, env: str, service: str) -> str:
    """The cgroup slice of a service's containers: scripts/container-metrics.sh finds them by this
    name (SLUG-ENV-SERVICE.slice) under /sys/fs/cgroup, whatever the cgroup driver and version."""
    return f"{slug}-{env}-{service}.slice"


def published_port(f: Facts, name: str) -> tuple[str, int] | None:
    if name == "db" and f.db:
        return ("DB_PORT", f.db["port"])
    return PUBLISHED_INTERNALS.get(name)


VOLUME_ORDER = ("proxy-data", "db-data", "db-wal", "db-binlog", "cache-data", "prometheus-data", "alertmanager-data", "grafana-data", "loki-data")


def response_headers(f: Facts, env: str) -> dict[str, str]:
    headers = dict(SECURITY_HEADERS)
    if f.tls_in(env):
        subdomains = "; includeSubDomains" if f.hsts_subdomains else ""
        headers["Strict-Transport-Security"] = f"max-age={HSTS_MAX_AGE}{subdomains}"
    return headers


def throwaway_args(db: Service) -> list[str]:
    """`docker run` options for a throwaway copy of the database service (scripts/verify-backup.sh):
    its user, hardening, tmpfs, settings and limits, an anonymous data volume, no network. The secret
    files it reads are mounted by the script (they are per environment)."""
    cpus, memory = SIZES["db"]
    args = [f"--user={db.user}", *(f"--group-add={gid}" for gid in db.group_add), "--read-only", "--cap-drop=ALL",
            "--security-opt=no-new-privileges:true", "--network=none", f"--pids-limit={PIDS['db']}",
            f"--cpus={cpus:g}", f"--memory={memory}m", *(f"--tmpfs={path}" for path in db.tmpfs)]
    if db.shm_size:
        args.append(f"--shm-size={db.shm_size}")
    data_dir = db.volumes[0].split(":")[1]
    args.append(f"--volume={data_dir}")  # anonymous: removed with the container (docker rm --volumes)
    args += [f"--env={key}={value}" for key, value in db.environment.items()]
    unsafe = [arg for arg in args if not re.fullmatch(r"[A-Za-z0-9_./:=,-]+", arg)]
    assert not unsafe, f"throwaway options are written unquoted into a bash array: {unsafe}"
    return args


def derive(answers: dict[str, Any]) -> dict[str, Any]:
    """Everything the templates need beyond the raw answers."""
    f = Facts(answers)
    services = build_services(f)
    per_environment(f, services)
    reads = secret_readers(f)
    by_name = {s.name: s for s in services}
    used_networks = {net for s in services for net in s.networks} | {
        net for s in services for nets in s.env_networks.values() for net in nets}
    named_volumes = {v.split(":", 1)[0] for s in services for v in [*s.volumes, *s.compose_only.get("volumes", [])]
                     if not v.startswith(("/", "."))}

    # The TLS secret files, where TLS ends in this stack with certificate files.
    tls_files = ["tls_cert", "tls_key"] if f.tls == "files" else []
    # The environments that run PostgreSQL with CloudNativePG, and its object store's credentials there.
    cloudnative_envs = cloudnative_environments(answers, f.environments)
    store_secrets = list(STORE_KEYS.values())
    envs = {}
    for env in f.environments:
        profile = PROFILES[env]
        tls_secrets = tls_files if f.tls_in(env) else []
        envs[env] = dict(
            profile,
            name=env,
            project=f"{f.slug}-{env}",
            domain=f.domain(env),
            tls=f.tls_in(env),
            replicas=replicas(profile, f.app_replicas),
            # The services of this environment, and those defined whole in compose.<env>.yaml.
            services=[s.name for s in services if s.runs_in(env)],
            own_services=[s.name for s in services if s.only_in and env in s.only_in],
            secrets=list(reads) + tls_secrets + (store_secrets if env in cloudnative_envs else []),
            # Internal ports dev publishes on 127.0.0.1: service -> env file key, port, mapping.
            published={s.name: dict(key=published_port(f, s.name)[0], port=f.host_ports(env)[s.name],
                                    container_port=published_port(f, s.name)[1], mapping=s.ports[env][0])
                       for s in services if s.role != "proxy" and s.ports.get(env)},
            # Headers the proxy adds to every response (HSTS where TLS ends here).
            response_headers=response_headers(f, env),
            # Default host ports of the proxy (fixed, or the project's block).
            http_port=f.host_ports(env)["http"],
            https_port=f.host_ports(env)["https"],
        )

    rotation = rotation_plan(f, reads, by_name, tls_files, store_secrets if cloudnative_envs else [])
    db = f.db
    if db:
        db = dict(db, exporter_ref=image_ref(db["exporter"]), throwaway=throwaway_args(by_name["db"]))
    apps = {s.name: colour_names(s.colour) for s in services if s.role == "app"}
    healthcheck = app_healthcheck(f.runtime, f.app_port, answers["health_path"])
    image_keys = list(RUNTIMES[f.runtime]["images"]) + [f.proxy]
    by_role = {"db": f.database, "cache": "redis", "db-exporter": (db or {}).get("exporter"),
               "cache-exporter": "redis-exporter", "proxy-exporter": "nginx-exporter"}
    for s in services:
        key = by_role.get(s.role, s.role)
        if key in IMAGES and key not in image_keys:
            image_keys.append(key)
    return {
        "app_uid": APP_UID,
        "secrets_gid": SECRETS_GID,
        "environments": f.environments,
        "envs": envs,
        # The services, in the order the compose files list them (services.Service).
        "services": services,
        "service": by_name,
        "apps": apps,
        "blue_green": f.blue_green,
        "secrets": reads,
        "networks": [net for net in NETWORK_ORDER if net in used_networks],
        # Networks with a route out outside dev too (the others are internal there).
        "open_networks": [net for net in OPEN_NETWORKS if net in used_networks],
        "network_purpose": NETWORK_PURPOSE,
        "build_secret": BUILD_SECRET,
        "build_env_mounts": BUILD_ENV_MOUNTS,
        "build_env_stage_arg": BUILD_ENV_STAGE_ARG,
        "build_env_stage_ref": f"${{{BUILD_ENV_STAGE_ARG}}}",
        "build_env_stages": [dict(stage, comment="\n".join(f"# {line}" for line in stage["comment"]))
                             for stage in BUILD_ENV_STAGES],
        "system_packages": {side: system_packages(side) for side in SYSTEM_PACKAGES},
        "grafana_public": f.grafana_public,
        "grafana_admin": grafana_admin(f) if f.monitored else None,
        "volumes": [v for v in VOLUME_ORDER if v in named_volumes],
        "tls_secrets": tls_files,
        # How scripts/rotate-secret.sh replaces each secret (extensions/rotation.py).
        "rotation": rotation,
        "rotatable": any(not plan["refused"] for plan in rotation.values()),
        # The README's examples: a secret the app reads (else any) with a random value, one only the operator has.
        "rotation_examples": {kind: next((name for name, plan in sorted(rotation.items(), key=lambda item: not item[1]["app"])
                                          if not plan["refused"] and plan["value"] == kind), "")
                              for kind in ("random", "operator")},
        "images": dict(IMAGES),
        "image_keys": image_keys,
        "image_vars": {key: image_var(key) for key in IMAGES},
        # What a compose file (or a script) writes for an image: the pin, overridable (image_ref).
        "image_refs": {key: image_ref(key) for key in IMAGES},
        # Non-root proxy unless ACME state must go to a root-owned volume (then UID 0, no caps).
        "proxy": {"acme": f.acme, "uid": 65534, **PROXIES[f.proxy]},
        # Mozilla's intermediate profile: TLS 1.2+, these suites for 1.2 (IANA and OpenSSL names).
        "tls_ciphers": list(TLS12_CIPHERS),
        "tls_ciphers_openssl": ":".join(TLS12_CIPHERS.values()),
        "db": db,
        # Point-in-time recovery (Compose target): PostgreSQL archives its WAL, MariaDB's binary log is streamed.
        "pitr": bool(db and "archive" in db),
        "migrate": f.migrate,
        # The database role the app logs in as ("app", or "owner" without migrations).
        "app_db_role": app_role(f),
        "monitored": f.monitored,
        "with_logs": f.with_logs,
        "alert_receiver": f.alert_receiver,
        # Secret files only the operator can fill in -> what does not work while they hold a placeholder.
        "operator_secrets": {name: effect for name, effect in OPERATOR_SECRETS.items()
                             if name in reads or (cloudnative_envs and name in store_secrets)},
        # Environments with scheduled backups, and whose TLS certificate Prometheus watches.
        "backup_environments": [env for env in f.environments if PROFILES[env]["scheduled_backups"]] if f.db else [],
        "audit_environments": [env for env in f.environments if PROFILES[env]["scheduled_audit"]],
        # Where a host unit writes each container's CPU and memory for Prometheus (scripts/container-metrics.sh).
        "container_metrics_environments": f.environments if f.monitored else [],
        # How cron and supervisord (both root) run it: root that cannot pass a file's permissions (no
        # capability, none to regain), at low priority, as the systemd unit runs it.
        "capless_command": CAPLESS_COMMAND,
        "probe_environments": [env for env in f.environments if f.probed(env)],
        # Environments where the blackbox exporter runs (certificates, or an app without metrics).
        "blackbox_environments": [env for env in f.environments if f.blackbox_in(env)],
        "signals": signals(f),
        # The controls scripts/audit.sh checks and docs/compliance.md maps, with each service's exemptions.
        "compliance": audit_plan(services, f.environments, PROFILES, f"{APP_UID}:{APP_UID}"),
        "metrics_path": f.metrics_path,
        # Node exporter reads the backup scripts' metrics (metrics/ENV/*.prom).
        "backup_metrics": bool(f.db) and f.monitored,
        # metrics/ENV/ exists for node exporter (its textfile directory and the disk it measures).
        "metrics_dir": f.monitored,
        "app_port": f.app_port,
        # Where Prometheus asks each replica (the app's metrics, or its health path for the blackbox).
        "scrape_port": f.scrape_port,
        "app_ports": f.app_ports,
        "proxy_ports": {"http": PROXY_HTTP_PORT, "https": PROXY_HTTPS_PORT, "ops": PROXY_OPS_PORT},
        "app_healthcheck": healthcheck,
        # compose.engine-25.yaml: the services whose health check polls every START_INTERVAL while
        # they start and every INTERVAL_AT_REST after (those of every environment; a service of
        # some environments keeps its timing).
        "start_interval": START_INTERVAL,
        "interval_at_rest": INTERVAL_AT_REST,
        "fast_start": [s.name for s in services if s.only_in is None and s.healthcheck and "test" in s.healthcheck],
        "start_exec": exec_form(answers["start_command"]),
        "tools": TOOLS,
        # The rendered pipeline: linters, scanner and signer, actions by commit.
        "ci": {"platform": f.ci, "linters": CI_LINTERS, "scanner": CI_SCANNER, "copier": CI_COPIER,
               # The platform's wording in the README and its OIDC issuer (none: no pipeline).
               "terms": CI_PLATFORMS.get(f.ci, {}),
               # A workflow's `uses:` value per action: pinned by commit, the release in a comment.
               "uses": {name.split("/")[1]: f"{name}@{sha}  # {release}" for name, (sha, release) in GITHUB_ACTIONS.items()},
               "gitlab_docker": GITLAB_DOCKER,
               # The OIDC issuer of the pipeline's keyless signatures (SIGNING_ISSUER in env/ENV.env).
               "signing_issuer": CI_PLATFORMS.get(f.ci, {}).get("signing_issuer", ""),
               # Where scripts/ci/test.sh runs the stack: the first environment the pipeline deploys to.
               "test_environment": next((env for env in f.environments if PROFILES[env]["pipeline_deploy"]), f.environments[-1]),
               # env -> "automatic" or "approval", in promotion order.
               "deploys": {env: PROFILES[env]["pipeline_deploy"] for env in f.environments if PROFILES[env]["pipeline_deploy"]}},
        # cron's "minute hour" fields of the daily backup time (HH:MM).
        "backup_cron": cron_daily(answers.get("backup_time") or "03:00"),
        "python_installer": answers.get("python_installer") if f.runtime == "python" else None,
        # What `compose.sh ENV up --build` does, in order.
        "up_steps": ["build"] + (["migrate"] if f.migrate else []) + ["start"],
        # The example app's direct dependencies and the lock files made from them (tests/lab/example_locks.py).
        "example_dependencies": example_dependencies(f.runtime, f.database, answers["cache"]) if f.runtime in EXAMPLE_DEPENDENCIES else None,
        "example_lock": f"template/_includes/locks/{example_lock_key(f.database, answers['cache'])}/",
        "example_migrations": bool(answers.get("example_app") and f.db and RUNTIMES[f.runtime]["example_migrations"]),
        # go.mod's go directive: the release of the pinned build image (golang:1.27-bookworm -> 1.27).
        "go_version": IMAGES["go"].split(":", 1)[1].split("-", 1)[0],
        # The Swarm target: a stack per environment (extensions/swarm.py), or None.
        "swarm": swarm_model(f.slug, envs, services, f.proxy, (f.db or {}).get("config_files", []), f.app_limits,
                             tls_files, image_keys, f.app_port)
        if "swarm" in f.orchestrators else None,
        # The Kubernetes target: a kustomize base, overlays and components (extensions/kubernetes.py), or None.
        "kubernetes": kubernetes_model(
            f.slug, answers["image_name"], envs, services, f.db,
            app={"port": f.app_port, "metrics_port": f.metrics_port, "health_path": answers["health_path"], "metrics_path": f.metrics_path,
                 "limits": f.app_limits, "max_replicas": int(answers.get("app_max_replicas") or f.app_replicas),
                 "monitored": f.monitored},
            options={"ingress_class": answers.get("kubernetes_ingress_class") or "nginx",
                     "ingress_namespace": answers.get("kubernetes_ingress_namespace") or "ingress-nginx",
                     "monitoring_namespace": answers.get("kubernetes_monitoring_namespace") or "monitoring",
                     "cluster_issuer": answers.get("kubernetes_cluster_issuer") if f.acme else None,
                     "cloudnative_pg": cloudnative_envs,
                     "cnpg_namespace": answers.get("kubernetes_cnpg_namespace") or "cnpg-system",
                     "backup_destination": answers.get("kubernetes_backup_destination") or f"s3://{f.slug}-backups",
                     "backup_endpoint": answers.get("kubernetes_backup_endpoint") or "",
                     "backup_time": tuple(int(x) for x in (answers.get("backup_time") or "03:00").split(":")),
                     # CloudNativePG's retention counts whole days, at least one.
                     "backup_keep_days": max(1, int(answers.get("backup_keep_days", 14))),
                     "backup_keep_days_any": int(answers.get("backup_keep_days", 14)),
                     "backup_keep_last": int(answers.get("backup_keep_last", 7))},
            tls_files=tls_files)
        if "kubernetes" in f.orchestrators else None,
    }
