"""The Kubernetes target (answer `orchestrators`: kubernetes): a kustomize base and one overlay per
environment, rendered from the same Service objects as the Compose files (services.py), and a
monitoring component. What Compose leaves to scripts, Kubernetes does itself: the app is a
Deployment that a HorizontalPodAutoscaler scales between a minimum and a maximum per environment;
a rolling update starts a new pod and waits for its readiness before an old one stops; the
database and cache are StatefulSets with a volume claim each; migrations and role setup are Jobs
that scripts/kubernetes/deploy.sh runs before the rollout.

What differs from Compose, and why:
- Networks become NetworkPolicies: everything is denied, then each path one workload needs is
  opened (the ingress controller to the app, the app to the database and cache, the jobs to the
  database, Prometheus to the metrics port, DNS).
- Every pod satisfies the Pod Security Standard "restricted" (the namespace enforces it): non-root,
  no privilege escalation, no capabilities, seccomp RuntimeDefault, read-only root filesystem
  with emptyDir volumes where Compose has a tmpfs.
- Secrets are one Secret generated from secrets/ENV/ (kustomize secretGenerator: a changed file
  is a new name, and the pods that read it roll); each pod mounts only the keys it reads.
- There is no reverse proxy: the cluster's ingress controller routes to the app's Service.
- The database's workload is a component per environment: components/db-statefulset (one pod and
  its volume claim), or for PostgreSQL in staging and production, when asked, components/
  db-cloudnative-pg (a CloudNativePG Cluster with WAL archiving and daily base backups to object
  storage). Either way a Service `db` reaches the one that takes writes, and the db-roles Job sets
  up the same roles.
- Images are the pins (catalogue.IMAGES) and the app by digest (the deploy script sets it)."""

from __future__ import annotations

from typing import Any

from .catalogue import APP_UID, SIZES, image_location, image_var
from .environments import limits
from .services import Service

# The in-cluster backup scripts (a ConfigMap of the StatefulSet's component): key -> file, relative to
# kubernetes/components/db-statefulset/, and where the CronJobs mount them.
BACKUP_SCRIPTS = {"backup.sh": "../../../scripts/kubernetes/in-cluster/backup.sh",
                  "verify-backup.sh": "../../../scripts/kubernetes/in-cluster/verify-backup.sh",
                  "setup.sh": "../../../scripts/kubernetes/in-cluster/setup.sh",
                  "core.sh": "../../../scripts/lib/core.sh", "db.sh": "../../../scripts/lib/db.sh",
                  "backups.sh": "../../../scripts/lib/backups.sh"}
BACKUP_SCRIPTS_DIR = "/opt/db-backup"
# The object store's credentials: the key CloudNativePG reads -> the secret file (secrets/ENV/).
STORE_KEYS = {"ACCESS_KEY_ID": "backup_store_access_key_id", "ACCESS_SECRET_KEY": "backup_store_secret_access_key"}
# Roles that run on Kubernetes, and the workload kind of each.
KINDS = {"app": "Deployment", "db": "StatefulSet", "cache": "StatefulSet", "migrate": "Job", "db-roles": "Job"}
NAME_LABEL, COMPONENT_LABEL = "app.kubernetes.io/name", "app.kubernetes.io/component"
# Kubernetes version the output is validated against (the current release minus one).
KUBERNETES_VERSION = "1.36.0"
# PostgreSQL refuses a data directory holding the volume's lost+found: a directory under it.
DATA_SUBDIR = {"postgres": "pgdata"}
# The HPA's targets: average use of the pods' requests.
CPU_TARGET, MEMORY_TARGET = 70, 80
# How long the app's pod keeps serving after it is taken out of the Service (endpoints catch up).
PRESTOP_SECONDS = 5
# CloudNativePG (answer kubernetes_postgres): the environments that run it, and its instances there
# (a primary and streaming replicas; the operator fails over to a replica).
CNPG_ENVIRONMENTS = ("staging", "production")
CNPG_INSTANCES = {"staging": 2, "production": 3}
BARMAN_PLUGIN = "barman-cloud.cloudnative-pg.io"
# Ports of a CloudNativePG instance: PostgreSQL, and the instance manager's status endpoint that
# the operator polls.
CNPG_STATUS_PORT = 8000


def quantity(limit: dict[str, str]) -> dict[str, str]:
    """A Compose limit ({"cpus": "0.5", "memory": "256M"}) as Kubernetes quantities."""
    return {"cpu": f"{round(float(limit['cpus']) * 1000)}m", "memory": limit["memory"].removesuffix("M") + "Mi"}


def resources(size: tuple[float, int], scale: float) -> dict[str, Any]:
    """Requests and limits: memory guaranteed (requests = limits), half the CPU limit requested."""
    lim = quantity(limits(*size, scale))
    cpu_request = max(int(lim["cpu"].removesuffix("m")) // 2, 50)
    return {"requests": {"cpu": f"{cpu_request}m", "memory": lim["memory"]}, "limits": lim}


def unescape(value: Any) -> Any:
    """A Compose string, or list of strings, with its "$$" escape undone."""
    if isinstance(value, list):
        return [unescape(v) for v in value]
    return value.replace("$$", "$")


def escape_expansion(value: list[str]) -> list[str]:
    """Kubernetes expands $(NAME) in command and args: $$( keeps a shell's $( as it is."""
    return [v.replace("$(", "$$(") for v in value]


def exec_probe(healthcheck: dict[str, Any]) -> dict[str, Any]:
    """A Compose health check as an exec probe's command."""
    test = unescape(healthcheck["test"])
    command = ["sh", "-c", test[1]] if test[0] == "CMD-SHELL" else test[1:]
    return {"exec": {"command": command}}


def seconds(duration: str) -> int:
    return int(duration.removesuffix("s"))


class KubernetesTarget:
    """The base, the monitoring component and the overlays of one project."""

    def __init__(self, slug: str, image_name: str, envs: dict[str, dict[str, Any]], services: list[Service],
                 db: dict[str, Any] | None, app: dict[str, Any], options: dict[str, Any]):
        """`app`: port, metrics_port, health_path, metrics_path, limits (cpus, MiB), max_replicas; `options`: the
        kubernetes_* answers (ingress_class, ingress_namespace, monitoring_namespace, cluster_issuer)."""
        self.slug, self.image_name, self.envs, self.db, self.app, self.options = slug, image_name, envs, db, app, options
        # The app's metrics server, when it has one apart from its HTTP port: a port of its own
        # ("metrics") in the pod and the Service, which the ServiceMonitor scrapes.
        scraped = app["monitored"] and app["metrics_path"]
        self.metrics_port_name = "metrics" if scraped and app.get("metrics_port", app["port"]) != app["port"] else "http"
        self.by_role = {}
        for s in services:
            if s.role in KINDS and (s.role != "app" or s.colour == "blue"):
                self.by_role[s.role] = s
        self.secret_keys = sorted({name for s in self.by_role.values() for name in s.secrets} | set(self.backup_secrets()))

    # --- labels and names -----------------------------------------------------------------------------
    def labels(self, role: str) -> dict[str, str]:
        return {NAME_LABEL: self.slug, COMPONENT_LABEL: role}

    def meta(self, name: str, role: str) -> dict[str, Any]:
        return {"name": name, "labels": self.labels(role)}

    # --- pods -------------------------------------------------------------------------------------------
    def image(self, s: Service) -> str:
        if s.role in ("app", "migrate"):
            return f"{self.image_name}:dev"  # the deploy script sets the digest (kustomize images)
        return "/".join(image_location(self.image_key(s)))  # the pin, as Compose names it without IMAGE_MIRROR

    def image_key(self, s: Service) -> str:
        """The catalogue key of a service's image other than the app's."""
        return {"db": (self.db or {}).get("image"), "db-roles": (self.db or {}).get("image"), "cache": "redis"}[s.role]

    def user(self, s: Service) -> tuple[int, int]:
        uid, _, gid = (s.user or f"{APP_UID}:{APP_UID}").partition(":")
        return int(uid), int(gid or uid)

    def container(self, s: Service) -> dict[str, Any]:
        c: dict[str, Any] = {"name": s.role, "image": self.image(s), "imagePullPolicy": "IfNotPresent"}
        # Compose's entrypoint replaces the image's ENTRYPOINT, as a container's command does; its
        # command replaces CMD, as args do (the image's entrypoint still runs: it reads *_FILE).
        if s.entrypoint:
            c["command"] = escape_expansion(unescape(s.entrypoint))
        if s.command:
            c["args"] = escape_expansion(unescape(s.command))
        # APP_VERSION: the deploy script adds the version it deploys.
        env = {k: unescape(v) for k, v in s.environment.items() if k != "APP_VERSION"}
        if s.role == "db" and self.db and self.db["name"] in DATA_SUBDIR:
            env["PGDATA"] = f"{self.db['data_dir']}/{DATA_SUBDIR[self.db['name']]}"
        if env:
            c["env"] = [{"name": k, "value": v} for k, v in env.items()]
        if s.env_file:
            c["envFrom"] = [{"configMapRef": {"name": "app-settings"}}]
        if s.role == "app":
            c["ports"] = [{"name": "http", "containerPort": self.app["port"]}] + self.metrics_ports("containerPort")
        elif s.role in ("db", "cache"):
            port = self.db["port"] if s.role == "db" else 6379
            c["ports"] = [{"name": s.role, "containerPort": port}]
        c["securityContext"] = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]}}
        c["resources"] = {}  # per environment (the overlay's patch)
        c.update(self.probes(s))
        mounts = [{"name": "secrets", "mountPath": "/run/secrets", "readOnly": True}] if s.secrets else []
        mounts += [{"name": self.volume_name(path), "mountPath": path} for path in self.scratch(s)]
        if s.role == "db-roles":
            mounts.append({"name": "db-roles", "mountPath": "/etc/db-roles", "readOnly": True})
        for v in s.volumes:
            name, _, path = v.partition(":")
            if not name.startswith("."):
                mounts.append({"name": "data", "mountPath": path.split(":")[0]})
        c["volumeMounts"] = mounts  # every container has some: secrets, scratch space
        if s.role == "app":
            c["lifecycle"] = {"preStop": {"sleep": {"seconds": PRESTOP_SECONDS}}}
        return c

    def metrics_ports(self, key: str) -> list[dict[str, Any]]:
        """The metrics server's port as a container's or a Service's port list entry; none when
        Prometheus scrapes the HTTP port."""
        return [{"name": "metrics", key: self.app["metrics_port"]}] if self.metrics_port_name == "metrics" else []

    def probes(self, s: Service) -> dict[str, Any]:
        if s.role == "app":
            get = {"httpGet": {"path": self.app["health_path"], "port": "http"}}
            return {"startupProbe": {**get, "periodSeconds": 2, "failureThreshold": 60},
                    "readinessProbe": {**get, "periodSeconds": 5, "timeoutSeconds": 4, "failureThreshold": 2},
                    "livenessProbe": {**get, "periodSeconds": 10, "timeoutSeconds": 4, "failureThreshold": 3}}
        if s.role in ("db", "cache"):
            probe = exec_probe(s.healthcheck)
            timeout = seconds(s.healthcheck.get("timeout", "5s"))
            return {"startupProbe": {**probe, "periodSeconds": 5, "timeoutSeconds": timeout, "failureThreshold": 60},
                    "readinessProbe": {**probe, "periodSeconds": 10, "timeoutSeconds": timeout, "failureThreshold": 3},
                    "livenessProbe": {**probe, "periodSeconds": 20, "timeoutSeconds": timeout, "failureThreshold": 6}}
        return {}

    def scratch(self, s: Service) -> list[str]:
        """Writable directories of a read-only container (Compose's tmpfs mounts): emptyDir volumes."""
        paths = [entry.split(":", 1)[0] for entry in s.tmpfs]
        if s.role in ("app", "migrate") and "/tmp" not in paths:
            paths.insert(0, "/tmp")  # the x-app anchor's tmpfs
        if s.shm_size:
            paths.append("/dev/shm")
        return paths

    @staticmethod
    def volume_name(path: str) -> str:
        return "scratch" + path.replace("/", "-").rstrip("-")

    def pod(self, s: Service) -> dict[str, Any]:
        uid, gid = self.user(s)
        spec: dict[str, Any] = {
            "serviceAccountName": s.role,  # each its own identity, applied with it (the deploy's steps)
            "automountServiceAccountToken": False,
            "securityContext": {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": gid, "fsGroup": gid,
                                "seccompProfile": {"type": "RuntimeDefault"}},
        }
        if s.role == "app":
            spec["terminationGracePeriodSeconds"] = 30 + PRESTOP_SECONDS
            spec["topologySpreadConstraints"] = [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                                                  "whenUnsatisfiable": "ScheduleAnyway",
                                                  "labelSelector": {"matchLabels": self.labels("app")}}]
        elif s.stop_grace_period:
            spec["terminationGracePeriodSeconds"] = seconds(s.stop_grace_period)
        if s.one_off:
            spec["restartPolicy"] = "Never"
        spec["containers"] = [self.container(s)]
        volumes = []
        if s.secrets:
            volumes.append({"name": "secrets", "secret": {"secretName": "secrets", "defaultMode": 0o440,
                                                          "items": [{"key": k, "path": k} for k in s.secrets]}})
        for path in self.scratch(s):
            empty: dict[str, Any] = {"medium": "Memory", "sizeLimit": "256Mi"} if path == "/dev/shm" else {"sizeLimit": "64Mi"}
            volumes.append({"name": self.volume_name(path), "emptyDir": empty})
        if s.role == "db-roles":
            volumes.append({"name": "db-roles", "configMap": {"name": "db-roles", "defaultMode": 0o444}})
        spec["volumes"] = volumes
        return {"metadata": {"labels": self.labels(s.role)}, "spec": spec}

    # --- workloads ----------------------------------------------------------------------------------
    def service_account(self, name: str, role: str) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": self.meta(name, role),
                "automountServiceAccountToken": False}

    def app_manifests(self) -> list[dict[str, Any]]:
        s = self.by_role["app"]
        return [
            self.service_account("app", "app"),
            {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": self.meta("app", "app"),
             "spec": {"revisionHistoryLimit": 10, "selector": {"matchLabels": self.labels("app")},
                      # A new pod must be ready before an old one stops; the HPA owns the count.
                      "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                      "minReadySeconds": 5, "progressDeadlineSeconds": 300,
                      "template": self.pod(s)}},
            {"apiVersion": "v1", "kind": "Service", "metadata": self.meta("app", "app"),
             "spec": {"selector": self.labels("app"), "ports": [{"name": "http", "port": self.app["port"], "targetPort": "http"}]
                      + [dict(port, targetPort="metrics") for port in self.metrics_ports("port")]}},
            {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": self.meta("app", "app"),
             "spec": {"maxUnavailable": 1, "selector": {"matchLabels": self.labels("app")}}},
            {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": self.meta("app", "app"),
             "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "app"},
                      "minReplicas": 1, "maxReplicas": 1,  # per environment (the overlay's patch)
                      "metrics": [
                          {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": CPU_TARGET}}},
                          {"type": "Resource", "resource": {"name": "memory", "target": {"type": "Utilization", "averageUtilization": MEMORY_TARGET}}}],
                      # Up at once; down one pod a minute after 5 minutes below the target.
                      "behavior": {"scaleUp": {"stabilizationWindowSeconds": 0,
                                               "policies": [{"type": "Pods", "value": 2, "periodSeconds": 30}]},
                                   "scaleDown": {"stabilizationWindowSeconds": 300,
                                                 "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]}}}},
        ]

    def ingress(self) -> dict[str, Any]:
        return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": self.meta("app", "app"),
                "spec": {"ingressClassName": self.options["ingress_class"],
                         "rules": [{"host": "localhost", "http": {"paths": [
                             {"path": "/", "pathType": "Prefix",
                              "backend": {"service": {"name": "app", "port": {"name": "http"}}}}]}}]}}

    def stateful(self, role: str) -> list[dict[str, Any]]:
        s = self.by_role[role]
        port = self.db["port"] if role == "db" else 6379
        volume = next(v for v in s.volumes if not v.startswith("."))
        return [
            self.service_account(role, role),
            # Headless: the pod's own address, as Compose's DNS gives it.
            {"apiVersion": "v1", "kind": "Service", "metadata": self.meta(role, role),
             "spec": {"clusterIP": "None", "selector": self.labels(role), "ports": [{"name": role, "port": port, "targetPort": role}]}},
            {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": self.meta(role, role),
             "spec": {"serviceName": role, "replicas": 1, "selector": {"matchLabels": self.labels(role)},
                      "podManagementPolicy": "OrderedReady", "updateStrategy": {"type": "RollingUpdate"},
                      "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Retain"},
                      "template": self.pod(s),
                      "volumeClaimTemplates": [{"metadata": {"name": "data", "labels": self.labels(role)},
                                                "spec": {"accessModes": ["ReadWriteOnce"],
                                                         "resources": {"requests": {"storage": "10Gi" if role == "db" else "1Gi"}}}}]}},
        ]

    def job(self, role: str) -> list[dict[str, Any]]:
        s = self.by_role[role]
        pod = self.pod(s)
        manifests = [self.service_account(role, role)]
        manifests.append({"apiVersion": "batch/v1", "kind": "Job", "metadata": self.meta(role, role),
                          # Retried while the database starts; deleted a day after it finished.
                          "spec": {"backoffLimit": 6, "activeDeadlineSeconds": 600, "ttlSecondsAfterFinished": 86400,
                                   "template": pod}})
        return manifests

    # --- the database's workload: a component per environment ------------------------------------------
    def cloudnative(self, env: str) -> bool:
        return env in self.options["cloudnative_pg"]

    def db_component(self, env: str) -> str:
        return "db-cloudnative-pg" if self.cloudnative(env) else "db-statefulset"

    def components(self) -> dict[str, dict[str, Any]]:
        """Component name -> its description and objects (components/NAME/resources.yaml)."""
        if "db" not in self.by_role:
            return {}
        found = {"db-statefulset": {"about": "the database as one pod with its volume claim (a StatefulSet)"
                                             + (", its daily backup and the backup's verification (CronJobs)" if self.backup_jobs() else ""),
                                    "objects": self.stateful("db") + self.backup_jobs(), "image_fields": [],
                                    "configmaps": [{"name": "db-backup-scripts", "files": BACKUP_SCRIPTS}] if self.backup_jobs() else []}}
        if any(self.cloudnative(env) for env in self.envs):
            found["db-cloudnative-pg"] = {"about": "the database as a CloudNativePG Cluster, its backups and its network paths",
                                          "objects": self.cloudnative_pg(), "configmaps": [],
                                          "image_fields": [{"path": "spec/imageName", "kind": "Cluster"}]}
        return found

    def cloudnative_pg(self) -> list[dict[str, Any]]:
        """A CloudNativePG Cluster named db: the image's PostgreSQL release, the same database and
        administrator as the StatefulSet (the db-roles Job then sets up the other roles), WAL archived
        continuously and a base backup each day through the Barman Cloud plugin, and a Service db that
        follows the primary, so that the app's settings do not change."""
        r, port = self.db["roles"], self.db["port"]
        hour, minute = self.options["backup_time"]
        labels = self.labels("db")
        primary = {**labels, "cnpg.io/cluster": "db", "cnpg.io/instanceRole": "primary"}
        operator = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": self.options["cnpg_namespace"]}}}
        instances = self.pods_of("db")
        instance_ports = [{"protocol": "TCP", "port": port}, {"protocol": "TCP", "port": CNPG_STATUS_PORT}]
        store: dict[str, Any] = {
            "destinationPath": self.options["backup_destination"],  # the overlay appends /ENV
            "s3Credentials": {"accessKeyId": {"name": "db-backup-store", "key": "ACCESS_KEY_ID"},
                              "secretAccessKey": {"name": "db-backup-store", "key": "ACCESS_SECRET_KEY"}},
            "wal": {"compression": "gzip"}, "data": {"compression": "gzip"}}
        if self.options.get("backup_endpoint"):
            store["endpointURL"] = self.options["backup_endpoint"]
        return [
            {"apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster", "metadata": self.meta("db", "db"),
             "spec": {"instances": 1,  # per environment (the overlay's patch)
                      "imageName": "/".join(image_location("cloudnative-pg")),
                      # The pods, their volumes and Services carry the db's labels: the NetworkPolicies select them.
                      "inheritedMetadata": {"labels": labels},
                      "primaryUpdateStrategy": "unsupervised",
                      "enableSuperuserAccess": False,
                      "bootstrap": {"initdb": {"database": "app", "owner": r["admin"], "secret": {"name": "db-admin"}}},
                      # The administrator as Compose's image makes it (a superuser): db-roles and restore log in as it.
                      "managed": {"roles": [{"name": r["admin"], "ensure": "present", "login": True, "superuser": True,
                                             "passwordSecret": {"name": "db-admin"}}]},
                      # scripts/backup.sh and restore.sh run psql in the primary's container, on its socket.
                      "postgresql": {"pg_ident": [f"local postgres {r['admin']}", f"local postgres {r['backup']}"]},
                      "storage": {"size": "10Gi"},
                      "resources": {},  # per environment (the overlay's patch)
                      "affinity": {"podAntiAffinityType": "preferred", "topologyKey": "kubernetes.io/hostname"},
                      "plugins": [{"name": BARMAN_PLUGIN, "isWALArchiver": True, "parameters": {"barmanObjectName": "db-backups"}}]}},
            {"apiVersion": "barmancloud.cnpg.io/v1", "kind": "ObjectStore", "metadata": self.meta("db-backups", "db"),
             "spec": {"retentionPolicy": f"{self.options['backup_keep_days']}d", "configuration": store}},
            {"apiVersion": "postgresql.cnpg.io/v1", "kind": "ScheduledBackup", "metadata": self.meta("db-daily", "db"),
             # Six fields, seconds first (CloudNativePG's cron); the first one when the Cluster is made.
             "spec": {"schedule": f"0 {minute} {hour} * * *", "immediate": True, "backupOwnerReference": "self",
                      "cluster": {"name": "db"}, "method": "plugin", "pluginConfiguration": {"name": BARMAN_PLUGIN}}},
            {"apiVersion": "v1", "kind": "Service", "metadata": self.meta("db", "db"),
             "spec": {"selector": primary, "ports": [{"name": "db", "port": port, "targetPort": port}]}},
            self.policy("db-from-operator", "db", ingress=[{"from": [operator], "ports": instance_ports}]),
            self.policy("db-replication", "db", ingress=[{"from": instances, "ports": instance_ports}],
                        egress=[{"to": instances, "ports": instance_ports}]),
            # The instance manager talks to the API server, the Barman Cloud plugin to the object
            # store: neither has an address known here, so HTTPS to any (docs/kubernetes.md).
            self.policy("db-to-api-server-and-object-store", "db",
                        egress=[{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}],
                                 "ports": [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 6443}]}]),
        ]

    # --- backups of the StatefulSet's database: CronJobs ---------------------------------------------------
    def backup_secrets(self) -> list[str]:
        """The secret files the backup CronJobs read: the backup role's password, the signing key."""
        if not self.db:
            return []
        return [self.db["passwords"]["backup"], "backup_signing_key"]

    def backup_pod(self, role: str, script: str, secrets: list[str], scratch: list[str]) -> dict[str, Any]:
        """A CronJob's pod: the database's image, as its user, running one of scripts/kubernetes/in-cluster/."""
        db = self.by_role["db"]
        uid, gid = self.user(db)
        mounts = [{"name": "scripts", "mountPath": BACKUP_SCRIPTS_DIR, "readOnly": True},
                  {"name": "secrets", "mountPath": "/run/secrets", "readOnly": True},
                  {"name": "backups", "mountPath": "/backups"}]
        mounts += [{"name": self.volume_name(path), "mountPath": path} for path in scratch]
        container = {
            "name": role, "image": self.image(db), "imagePullPolicy": "IfNotPresent",
            "command": ["bash", f"{BACKUP_SCRIPTS_DIR}/{script}"],
            "env": [{"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                    {"name": "BACKUP_KEEP_LAST", "value": str(self.options["backup_keep_last"])},
                    {"name": "BACKUP_KEEP_DAYS", "value": str(self.options["backup_keep_days_any"])}],
            "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]}},
            "resources": {},  # per environment (the overlay's patch)
            "volumeMounts": mounts,
        }
        volumes = [{"name": "scripts", "configMap": {"name": "db-backup-scripts", "defaultMode": 0o444}},
                   {"name": "secrets", "secret": {"secretName": "secrets", "defaultMode": 0o440,
                                                  "items": [{"key": k, "path": k} for k in secrets]}},
                   {"name": "backups", "persistentVolumeClaim": {"claimName": "db-backups"}}]
        for path in scratch:
            volumes.append({"name": self.volume_name(path), "emptyDir": {"sizeLimit": "10Gi" if path == self.db["data_dir"] else "64Mi"}})
        return {"metadata": {"labels": self.labels(role)},
                "spec": {"serviceAccountName": "db-backup", "automountServiceAccountToken": False, "restartPolicy": "Never",
                         "securityContext": {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": gid, "fsGroup": gid,
                                             "seccompProfile": {"type": "RuntimeDefault"}},
                         "containers": [container], "volumes": volumes}}

    def cron_job(self, role: str, schedule: str, pod: dict[str, Any]) -> dict[str, Any]:
        return {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": self.meta(role, role),
                # One at a time; a run missed by more than an hour waits for the next day.
                "spec": {"schedule": schedule, "timeZone": "Etc/UTC", "concurrencyPolicy": "Forbid",
                         "startingDeadlineSeconds": 3600, "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 3,
                         "jobTemplate": {"metadata": {"labels": self.labels(role)},
                                         "spec": {"backoffLimit": 1, "activeDeadlineSeconds": 3 * 3600, "template": pod}}}}

    def backup_jobs(self) -> list[dict[str, Any]]:
        """The database in a StatefulSet: a backup each day at backup_time into the volume claim
        db-backups, and its verification an hour later (scripts/kubernetes/in-cluster/)."""
        if not self.backup_secrets():
            return []
        hour, minute = self.options["backup_time"]
        port = self.db["port"]
        return [
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": self.meta("db-backup", "db-backup"),
             "automountServiceAccountToken": False},
            {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": self.meta("db-backups", "db-backup"),
             "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "20Gi"}}}},
            self.cron_job("db-backup", f"{minute} {hour} * * *",
                          self.backup_pod("db-backup", "backup.sh", self.backup_secrets(), ["/tmp"])),
            self.cron_job("db-verify-backup", f"{minute} {(hour + 1) % 24} * * *",
                          self.backup_pod("db-verify-backup", "verify-backup.sh", ["backup_signing_key"],
                                          ["/tmp", self.db["data_dir"], self.db["run_dir"]])),
            self.policy("db-from-backup", "db", ingress=[{"from": self.pods_of("db-backup"), "ports": [{"protocol": "TCP", "port": port}]}]),
            self.policy("db-backup-to-db", "db-backup", egress=[{"to": self.pods_of("db"), "ports": [{"protocol": "TCP", "port": port}]}]),
        ]

    def db_workload(self, env: str) -> dict[str, str]:
        """How scripts reach ENV's database: the pod that takes writes (a label selector) and its container."""
        if self.cloudnative(env):
            return {"selector": "cnpg.io/cluster=db,cnpg.io/instanceRole=primary", "container": "postgres"}
        return {"selector": f"{COMPONENT_LABEL}=db", "container": "db"}

    # --- network policies -----------------------------------------------------------------------------
    def policy(self, name: str, role: str | None, ingress: list | None = None, egress: list | None = None) -> dict[str, Any]:
        types = (["Ingress"] if ingress is not None else []) + (["Egress"] if egress is not None else [])
        spec: dict[str, Any] = {"podSelector": {"matchLabels": self.labels(role)} if role else {}, "policyTypes": types}
        if ingress is not None:
            spec["ingress"] = ingress
        if egress is not None:
            spec["egress"] = egress
        return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": name, "labels": {NAME_LABEL: self.slug, COMPONENT_LABEL: "network"}}, "spec": spec}

    def pods_of(self, *roles: str) -> list[dict[str, Any]]:
        return [{"podSelector": {"matchLabels": self.labels(role)}} for role in roles]

    def network_policies(self) -> list[dict[str, Any]]:
        dns = {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                       "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
               "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}
        ingress_controller = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": self.options["ingress_namespace"]}}}
        policies = [
            self.policy("default-deny", None, ingress=[], egress=[]),
            self.policy("dns", None, egress=[dns]),
            self.policy("app-from-ingress", "app", ingress=[{"from": [ingress_controller], "ports": [{"protocol": "TCP", "port": "http"}]}]),
        ]
        clients = {"db": [r for r in ("app", "migrate", "db-roles") if r in self.by_role], "cache": ["app"]}
        for role in ("db", "cache"):
            if role not in self.by_role:
                continue
            port = self.db["port"] if role == "db" else 6379
            policies.append(self.policy(f"{role}-from-clients", role,
                                        ingress=[{"from": self.pods_of(*clients[role]), "ports": [{"protocol": "TCP", "port": port}]}]))
            for client in clients[role]:
                policies.append(self.policy(f"{client}-to-{role}", client,
                                            egress=[{"to": self.pods_of(role), "ports": [{"protocol": "TCP", "port": port}]}]))
        return policies

    # --- monitoring component -------------------------------------------------------------------------
    def monitoring(self) -> list[dict[str, Any]]:
        prometheus = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": self.options["monitoring_namespace"]}}}
        return [
            {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "metadata": self.meta("app", "app"),
             # job="app", as the alert rules expect (Compose's scrape job).
             "spec": {"jobLabel": "app.kubernetes.io/component", "selector": {"matchLabels": self.labels("app")},
                      "endpoints": [{"port": self.metrics_port_name, "path": self.app["metrics_path"], "interval": "15s"}]}},
            self.policy("app-from-prometheus", "app",
                        ingress=[{"from": [prometheus], "ports": [{"protocol": "TCP", "port": self.metrics_port_name}]}]),
        ]

    # --- overlays -------------------------------------------------------------------------------------
    def hpa_range(self, env: str) -> tuple[int, int]:
        e = self.envs[env]
        low = e["replicas"]
        cap = e["max_replicas"]
        high = self.app["max_replicas"] if cap is None else min(cap, self.app["max_replicas"])
        return low, max(low, high)

    def patches(self, env: str) -> list[dict[str, Any]]:
        e = self.envs[env]
        low, high = self.hpa_range(env)
        patches = []
        for role, s in self.by_role.items():
            size = self.app["limits"] if role in ("app", "migrate") else SIZES[role]
            if role == "db" and self.cloudnative(env):
                patches.append({"apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster", "metadata": {"name": "db"},
                                "spec": {"instances": CNPG_INSTANCES[env], "resources": resources(size, e["scale"])}})
                patches.append({"apiVersion": "barmancloud.cnpg.io/v1", "kind": "ObjectStore", "metadata": {"name": "db-backups"},
                                "spec": {"configuration": {"destinationPath": f"{self.options['backup_destination'].rstrip('/')}/{env}"}}})
                continue
            kind = KINDS[role]
            template = {"spec": {"containers": [{"name": role, "resources": resources(size, e["scale"])}]}}
            patches.append({"apiVersion": "batch/v1" if kind == "Job" else "apps/v1", "kind": kind,
                            "metadata": {"name": role}, "spec": {"template": template}})
        if self.backup_jobs() and not self.cloudnative(env):
            for role, size in (("db-backup", SIZES["db-backup"]), ("db-verify-backup", SIZES["db"])):
                template = {"spec": {"containers": [{"name": role, "resources": resources(size, e["scale"])}]}}
                patches.append({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": role},
                                "spec": {"jobTemplate": {"spec": {"template": template}}}})
        patches.append({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "app"},
                        "spec": {"minReplicas": low, "maxReplicas": high}})
        return patches

    def ingress_patch(self, env: str) -> list[dict[str, Any]]:
        """JSON patch operations of the Ingress: the environment's host, TLS where it ends here."""
        e = self.envs[env]
        ops: list[dict[str, Any]] = [{"op": "replace", "path": "/spec/rules/0/host", "value": e["domain"]}]
        if e["tls"]:
            ops.append({"op": "add", "path": "/spec/tls", "value": [{"hosts": [e["domain"]], "secretName": "tls"}]})
            if self.options.get("cluster_issuer"):
                ops.append({"op": "add", "path": "/metadata/annotations",
                            "value": {"cert-manager.io/cluster-issuer": self.options["cluster_issuer"]}})
        return ops

    def overlay(self, env: str, tls_files: bool) -> dict[str, Any]:
        e = self.envs[env]
        up = "../../.."
        kustomization: dict[str, Any] = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
            "namespace": f"{self.slug}-{env}",
            "resources": ["namespace.yaml", "../../base"],
        }
        components = [f"../../components/{self.db_component(env)}"] if "db" in self.by_role else []
        if self.app["metrics_path"] and self.app["monitored"]:
            components.append("../../components/monitoring")
        if components:
            kustomization["components"] = components
        kustomization["labels"] = [{"pairs": {"app.kubernetes.io/instance": f"{self.slug}-{env}"}, "includeSelectors": False}]
        kustomization["configMapGenerator"] = [{"name": "app-settings", "envs": [f"{up}/env/{env}.app.env"]}]
        generators = [{"name": "secrets", "files": [f"{k}={up}/secrets/{env}/{k}" for k in self.secret_keys]}] if self.secret_keys else []
        if self.cloudnative(env):
            # Read by the operator, which needs fixed names and the keys it asks for.
            fixed = {"disableNameSuffixHash": True, "labels": {"cnpg.io/reload": "true"}}
            generators.append({"name": "db-admin", "type": "kubernetes.io/basic-auth", "options": fixed,
                               "literals": [f"username={self.db['roles']['admin']}"],
                               "files": [f"password={up}/secrets/{env}/{self.db['passwords']['admin']}"]})
            generators.append({"name": "db-backup-store", "options": fixed,
                               "files": [f"{key}={up}/secrets/{env}/{name}" for key, name in STORE_KEYS.items()]})
        if e["tls"] and tls_files:
            generators.append({"name": "tls", "type": "kubernetes.io/tls",
                               "files": [f"tls.crt={up}/secrets/{env}/tls_cert", f"tls.key={up}/secrets/{env}/tls_key"]})
        if generators:
            kustomization["secretGenerator"] = generators
        kustomization["patches"] = [{"path": "resources.yaml"},
                                    {"path": "ingress.yaml", "target": {"kind": "Ingress", "name": "app"}}]
        return kustomization

    def namespace(self, env: str) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": f"{self.slug}-{env}",
                             "labels": {NAME_LABEL: self.slug,
                                        "pod-security.kubernetes.io/enforce": "restricted",
                                        "pod-security.kubernetes.io/enforce-version": "latest"}}}

    def base(self) -> dict[str, list[dict[str, Any]]]:
        files = {"app.yaml": self.app_manifests(), "ingress.yaml": [self.ingress()],
                 "network-policies.yaml": self.network_policies()}
        if "db" in self.by_role:
            files["db-roles.yaml"] = self.job("db-roles")
        if "migrate" in self.by_role:
            files["migrate.yaml"] = self.job("migrate")
        if "cache" in self.by_role:
            files["cache.yaml"] = self.stateful("cache")
        return files

    def base_kustomization(self) -> dict[str, Any]:
        k: dict[str, Any] = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                             "resources": list(self.base())}
        if self.db:
            k["configMapGenerator"] = [{"name": "db-roles", "files": [f"../../config/db/{name}" for name in self.db["config_files"]]}]
        return k


def cloudnative_environments(answers: dict[str, Any], environments: list[str]) -> list[str]:
    """The environments whose PostgreSQL is a CloudNativePG Cluster (answer kubernetes_postgres)."""
    if "kubernetes" not in (answers.get("orchestrators") or []) or answers.get("database") != "postgres" \
            or answers.get("kubernetes_postgres") != "cloudnative-pg":
        return []
    return [env for env in environments if env in CNPG_ENVIRONMENTS]


def checkov_skips(by_role: dict[str, Service]) -> dict[str, str]:
    """checkov's Kubernetes checks that the output fails on purpose, and why (kubernetes/.checkov.yaml)."""
    skips = {
        "CKV_K8S_43": "images by digest: the app runs by digest (scripts/deploy.sh sets it); the other images are "
                      "pinned by tag, the same pins as compose.yaml",
        "CKV_K8S_15": "imagePullPolicy Always: the app's image is a digest and the others are pinned tags; Always "
                      "would make every pod start depend on the registry",
    }
    if {"db", "cache"} & set(by_role):
        skips["CKV_K8S_40"] = ("UID above 10000: the database and cache run as their image's user (999), which owns "
                               "their data files; never root, no privilege escalation, no capabilities")
    return skips


def kubernetes_model(slug: str, image_name: str, envs: dict[str, dict[str, Any]], services: list[Service],
                     db: dict[str, Any] | None, app: dict[str, Any], options: dict[str, Any], tls_files: list[str]) -> dict[str, Any]:
    """The Kubernetes target of derive(): files of the base, the monitoring component and the overlays."""
    target = KubernetesTarget(slug, image_name, envs, services, db, app, options)
    return {
        "base": target.base(),
        "base_kustomization": target.base_kustomization(),
        "components": target.components(),
        "cloudnative_envs": [env for env in envs if target.cloudnative(env)],
        # The environments whose database is the StatefulSet (and its backup CronJobs).
        "statefulset_envs": [env for env in envs if not target.cloudnative(env)] if db else [],
        "cnpg_instances": CNPG_INSTANCES,
        "monitoring": target.monitoring() if app["monitored"] and app["metrics_path"] else None,
        "overlays": {env: {"kustomization": target.overlay(env, bool(tls_files)), "namespace": target.namespace(env),
                           "resources": target.patches(env), "ingress": target.ingress_patch(env)} for env in envs},
        "namespaces": {env: f"{slug}-{env}" for env in envs},
        # env -> (minimum, maximum) pods of the app's autoscaler.
        "autoscaling": {env: target.hpa_range(env) for env in envs},
        # The Jobs a deploy runs before the rollout, in order (roles before migrations).
        "jobs": [role for role in ("db-roles", "migrate") if role in target.by_role],
        # The workloads that run the app's image: the deploy script sets its digest and APP_VERSION.
        "versioned": [f"{KINDS[role]}:{role}" for role in ("app", "migrate") if role in target.by_role],
        "version": KUBERNETES_VERSION,
        # env -> the selector and container of the pod that takes the database's writes (backup, restore).
        "db_workload": {env: target.db_workload(env) for env in envs} if "db" in target.by_role else {},
        # env -> the operator's API groups its overlay needs (deploy.sh checks them first), and the
        # secret files only the operator can fill in (refused while they hold a placeholder).
        "api_groups": {env: ["postgresql.cnpg.io", "barmancloud.cnpg.io"] if target.cloudnative(env) else [] for env in envs},
        "operator_secrets": {env: list(STORE_KEYS.values()) if target.cloudnative(env) else [] for env in envs},
        # env -> objects an operator makes ready that the Jobs need (waited for, condition Ready).
        "ready_before_jobs": {env: ["cluster.postgresql.cnpg.io/db"] if target.cloudnative(env) else [] for env in envs},
        "checkov_skips": checkov_skips(target.by_role),
        # X_IMAGE -> the pin, for the images other than the app's: the deploy replaces a pin that
        # env/ENV.env overrides (X_IMAGE, IMAGE_MIRROR), as compose.yaml does.
        "images": {image_var(target.image_key(s)): target.image(s) for role, s in target.by_role.items()
                   if role not in ("app", "migrate")}
        | ({image_var("cloudnative-pg"): "/".join(image_location("cloudnative-pg"))} if "db-cloudnative-pg" in target.components() else {}),
    }
