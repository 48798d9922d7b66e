"""The Kubernetes target, validated statically (no cluster can run here: docs/kubernetes.md).

For every overlay of every variant with `orchestrators: [kubernetes]`: `kubectl kustomize` builds it
as scripts/deploy.sh does; the output passes `kubernetes-validate --strict` for the pinned version;
the Prometheus Operator objects pass their CRDs' schemas (tests/k8s); and policy checks on the
built objects: Pod Security "restricted", selectors that match the pods they mean, probes and
resources from the Compose profiles, the Compose images, no secret value outside Secrets, network
paths, autoscaling ranges, and the alert rules under promtool's unit tests."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, VARIANTS, answers, compose_config, require_tool, run
from extensions.catalogue import SIZES
from extensions.environments import PROFILES
from extensions.kubernetes import KUBERNETES_VERSION, resources

pytestmark = pytest.mark.slow  # every variant rendered and built: the slow tier (tests/run.sh)

K8S_VARIANTS = [name for name, extra in VARIANTS.items() if "kubernetes" in extra.get("orchestrators", [])]
WORKLOADS = ("Deployment", "StatefulSet", "Job")
# API groups of the operators' custom resources: validated against their CRDs, not Kubernetes' own schemas.
CUSTOM_GROUPS = ("monitoring.coreos.com/", "postgresql.cnpg.io/", "barmancloud.cnpg.io/")
OBJECT_STORE_CRD = ROOT / "tests" / "k8s" / "crds" / "barmancloud.cnpg.io_objectstores.yaml"


def build(project: Path, env: str) -> list[dict]:
    proc = run(require_tool("kubectl"), "kustomize", "--load-restrictor", "LoadRestrictionsNone",
               project / "kubernetes" / "overlays" / env)
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


@pytest.fixture(scope="module")
def built(render, tmp_path_factory):
    """variant -> (project with its environments initialised, env -> the built objects)."""
    result = {}
    for name in K8S_VARIANTS:
        project = tmp_path_factory.mktemp(name) / "project"
        shutil.copytree(render(name), project, ignore=shutil.ignore_patterns("secrets", "*.env", ".deploy"))
        envs = {}
        for env in answers(project)["environments"]:
            run(project / "scripts" / "init-env.sh", env)
            envs[env] = build(project, env)
        result[name] = (project, envs)
    return result


def each_build(built):
    for name, (project, envs) in built.items():
        for env, docs in envs.items():
            yield name, project, env, docs


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def named(docs: list[dict], kind: str, name: str) -> dict:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def pod_templates(docs: list[dict]) -> list[tuple[dict, dict]]:
    """(workload, its pod template) of every Deployment, StatefulSet, Job and CronJob."""
    return [(d, d["spec"]["template"]) for d in docs if d["kind"] in WORKLOADS] + \
        [(d, d["spec"]["jobTemplate"]["spec"]["template"]) for d in docs if d["kind"] == "CronJob"]


def compose_service_of(container: dict) -> str:
    """The Compose service a container's size and image come from: the backup CronJobs run the
    database's image with the sizes of Compose's dump client and of the database."""
    return {"app": "app-blue", "db-backup": "db", "db-verify-backup": "db"}.get(container["name"], container["name"])


def pod_labels(docs: list[dict]) -> dict[str, dict]:
    """Workload name -> its pods' labels; a CloudNativePG Cluster's primary carries its inherited
    labels and those the operator sets (cnpg.io/cluster, cnpg.io/instanceRole)."""
    pods = {w["metadata"]["name"]: t["metadata"]["labels"] for w, t in pod_templates(docs)}
    for cluster in of_kind(docs, "Cluster"):
        name = cluster["metadata"]["name"]
        pods[name] = {**cluster["spec"]["inheritedMetadata"]["labels"], "cnpg.io/cluster": name, "cnpg.io/instanceRole": "primary"}
    return pods


def selects(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def test_the_variants_cover_the_kubernetes_branches():
    chosen = [VARIANTS[name] for name in K8S_VARIANTS]
    assert {v.get("database", "postgres") for v in chosen} >= {"postgres", "mariadb", "none"}
    assert {v.get("tls", "files") for v in chosen} >= {"files", "acme", "none"}
    assert {v.get("monitoring", "prometheus") != "none" for v in chosen} == {True, False}


# --- the API's schemas -----------------------------------------------------------------------------------

def test_every_overlay_passes_the_api_schemas_strictly(built, tmp_path):
    validator = require_tool("kubernetes-validate")
    paths = []
    for name, project, env, docs in each_build(built):
        core = [d for d in docs if not d["apiVersion"].startswith(CUSTOM_GROUPS)]
        paths.append(tmp_path / f"{name}-{env}.yaml")
        paths[-1].write_text(yaml.safe_dump_all(core))
    # One run for every file (its start, the schemas' imports, costs about 2.6 s); it names the file of each error.
    proc = run(validator, "--strict", "--kubernetes-version", KUBERNETES_VERSION, "--quiet", *paths, check=False)
    assert proc.returncode == 0 and "ERROR" not in proc.stdout + proc.stderr, f"{proc.stdout}\n{proc.stderr}"
    assert len(paths) > 1


@pytest.mark.parametrize("mutation, reported", [
    (lambda d: d["spec"]["template"]["spec"]["containers"][0].update(readinessprobe={}), "readinessprobe"),
    (lambda d: d["spec"].update(minReadySeconds="5"), "minReadySeconds"),
], ids=["unknown-field", "wrong-type"])
def test_the_schema_check_rejects_what_the_api_would(built, tmp_path, mutation, reported):
    """The check can fail: an unknown field (--strict) and a wrong type are refused."""
    validator = require_tool("kubernetes-validate")
    _, _, _, docs = next(each_build(built))
    deployment = json.loads(json.dumps(named(docs, "Deployment", "app")))
    mutation(deployment)
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(deployment))
    proc = run(validator, "--strict", "--kubernetes-version", KUBERNETES_VERSION, path, check=False)
    assert proc.returncode != 0 and reported in proc.stdout + proc.stderr


def validate_custom_resources(docs: list[dict]) -> subprocess.CompletedProcess:
    require_tool("node")
    script = ROOT / "tests" / "k8s" / "validate-crs.mjs"
    if not (ROOT / "tests" / "k8s" / "node_modules").is_dir():
        pytest.fail("tests/k8s/node_modules is missing: run tests/lab/install-tools.sh", pytrace=False)
    return run("node", script, input=json.dumps(docs), check=False, cwd=ROOT / "tests" / "k8s")


def test_prometheus_operator_objects_pass_their_crd_schemas(built):
    seen = set()
    for name, _, env, docs in each_build(built):
        custom = [d for d in docs if d["apiVersion"].startswith("monitoring.coreos.com/")]
        if not custom:
            continue
        seen |= {d["kind"] for d in custom}
        proc = validate_custom_resources(custom)
        assert proc.returncode == 0, f"{name}/{env}: {proc.stderr}"
    assert seen == {"ServiceMonitor", "PrometheusRule"}
    broken = [{"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule", "metadata": {"name": "x"},
               "spec": {"groups": [{"name": "g", "rules": [{"alert": "A", "expr": "1", "for": 5}]}]}}]
    assert validate_custom_resources(broken).returncode != 0


def cloudnative_builds(built):
    return [(name, project, env, docs) for name, project, env, docs in each_build(built) if of_kind(docs, "Cluster")]


def test_cloudnative_pg_objects_pass_their_crd_schemas(built):
    """Cluster and ScheduledBackup against CloudNativePG's models (npm), ObjectStore against the
    Barman Cloud plugin's CRD (vendored: tests/k8s/crds/); a wrong type is refused by each."""
    import jsonschema

    store_schema = yaml.safe_load(OBJECT_STORE_CRD.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    builds = cloudnative_builds(built)
    assert builds, "no variant runs CloudNativePG"
    for name, _, env, docs in builds:
        operator = [d for d in docs if d["apiVersion"].startswith("postgresql.cnpg.io/")]
        assert {d["kind"] for d in operator} == {"Cluster", "ScheduledBackup"}, f"{name}/{env}"
        proc = validate_custom_resources(operator)
        assert proc.returncode == 0, f"{name}/{env}: {proc.stderr}"
        for store in of_kind(docs, "ObjectStore"):
            jsonschema.validate(store, store_schema)
    _, _, _, docs = builds[0]
    cluster = json.loads(json.dumps(named(docs, "Cluster", "db")))
    cluster["spec"]["instances"] = "3"
    assert validate_custom_resources([cluster]).returncode != 0
    store = json.loads(json.dumps(of_kind(docs, "ObjectStore")[0]))
    store["spec"]["retentionPolicy"] = "14 days"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(store, store_schema)


def test_cloudnative_pg_takes_the_statefulsets_place(built):
    """Where an environment runs CloudNativePG: no StatefulSet; the Service db reaches the primary
    only; the administrator the db-roles Job logs in as is the Cluster's (same name and password
    file); backups go to ENV's path with the credentials' keys the Secret has; the daily backup is
    at backup_time; the image is Compose's PostgreSQL release; the operator's paths are open."""
    for name, project, env, docs in cloudnative_builds(built):
        a = answers(project)
        where = f"{name}/{env}"
        assert env in ("staging", "production") and a["kubernetes_postgres"] == "cloudnative-pg"
        assert not of_kind(docs, "StatefulSet") or {s["metadata"]["name"] for s in of_kind(docs, "StatefulSet")} == {"cache"}
        cluster = named(docs, "Cluster", "db")["spec"]
        service = named(docs, "Service", "db")["spec"]
        assert service["selector"]["cnpg.io/instanceRole"] == "primary" and service["selector"]["cnpg.io/cluster"] == "db"
        assert "clusterIP" not in service, "a virtual IP: a failover does not wait for DNS caches"
        admin = named(docs, "Secret", "db-admin")
        assert admin["type"] == "kubernetes.io/basic-auth"
        username = base64.b64decode(admin["data"]["username"]).decode()
        password = base64.b64decode(admin["data"]["password"]).decode()
        assert cluster["bootstrap"]["initdb"] == {"database": "app", "owner": username, "secret": {"name": "db-admin"}}
        assert [r["name"] for r in cluster["managed"]["roles"] if r["superuser"]] == [username]
        roles_job = named(docs, "Job", "db-roles")["spec"]["template"]["spec"]["containers"][0]
        roles_script = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("db-roles"))
        assert f"PGUSER={username} " in roles_script["data"]["roles.sh"], "db-roles logs in as the Cluster's administrator"
        assert password.strip() == (project / "secrets" / env / "db_password").read_text().strip()
        assert any(m["mountPath"] == "/run/secrets" for m in roles_job["volumeMounts"])
        assert cluster["enableSuperuserAccess"] is False
        plugin = cluster["plugins"][0]
        assert plugin["isWALArchiver"] is True
        store = named(docs, "ObjectStore", plugin["parameters"]["barmanObjectName"])["spec"]
        assert store["configuration"]["destinationPath"] == f"{a['kubernetes_backup_destination'].rstrip('/')}/{env}"
        assert store["retentionPolicy"] == f"{max(1, a['backup_keep_days'])}d"
        credentials = store["configuration"]["s3Credentials"]
        secret = named(docs, "Secret", credentials["accessKeyId"]["name"])
        assert {credentials["accessKeyId"]["key"], credentials["secretAccessKey"]["key"]} <= set(secret["data"]), where
        for key, file in (("ACCESS_KEY_ID", "backup_store_access_key_id"), ("ACCESS_SECRET_KEY", "backup_store_secret_access_key")):
            assert base64.b64decode(secret["data"][key]).decode() == (project / "secrets" / env / file).read_text()
        backup = named(docs, "ScheduledBackup", "db-daily")["spec"]
        hour, minute = (int(x) for x in a["backup_time"].split(":"))
        assert backup["schedule"] == f"0 {minute} {hour} * * *"
        assert backup["cluster"]["name"] == "db" and backup["method"] == "plugin"
        assert backup["pluginConfiguration"]["name"] == plugin["name"]
        compose_image = compose_config(project, env)["services"]["db"]["image"]
        assert cluster["imageName"].rsplit(":", 1)[1].split("-")[0] == compose_image.rsplit(":", 1)[1].split("-")[0], where
        compose_limits = compose_config(project, env)["services"]["db"]["deploy"]["resources"]["limits"]
        assert float(cluster["resources"]["limits"]["cpu"].removesuffix("m")) / 1000 == float(compose_limits["cpus"])
        assert cluster["instances"] == {"staging": 2, "production": 3}[env]
        policies = {p["metadata"]["name"]: p["spec"] for p in of_kind(docs, "NetworkPolicy")}
        operator = policies["db-from-operator"]["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"]
        assert operator == {"kubernetes.io/metadata.name": a["kubernetes_cnpg_namespace"]}
        replication = policies["db-replication"]
        assert replication["ingress"][0]["from"] == replication["egress"][0]["to"] == [{"podSelector": {"matchLabels": cluster["inheritedMetadata"]["labels"]}}]
    # The environments without it keep the StatefulSet.
    for name, project, env, docs in each_build(built):
        if answers(project).get("database") == "postgres" and env == "dev":
            assert named(docs, "StatefulSet", "db") and not of_kind(docs, "Cluster")


# --- policies on the built objects -----------------------------------------------------------------------

def test_every_pod_meets_the_restricted_pod_security_standard(built):
    for name, _, env, docs in each_build(built):
        namespace = of_kind(docs, "Namespace")[0]
        assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
        for workload, template in pod_templates(docs):
            where = f"{name}/{env}/{workload['kind']}/{workload['metadata']['name']}"
            spec = template["spec"]
            pod_sc = spec["securityContext"]
            assert pod_sc["runAsNonRoot"] is True and pod_sc["runAsUser"] > 0, where
            assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault", where
            assert not any(spec.get(k) for k in ("hostNetwork", "hostPID", "hostIPC")), where
            assert spec["automountServiceAccountToken"] is False, where
            for volume in spec.get("volumes", []):
                assert set(volume) - {"name"} <= {"emptyDir", "secret", "configMap", "persistentVolumeClaim", "projected"}, where
            for c in spec["containers"]:
                sc = c["securityContext"]
                assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True, where
                assert sc["capabilities"] == {"drop": ["ALL"]}, where
                assert "privileged" not in sc and "ports" not in c or all("hostPort" not in p for p in c["ports"]), where


def test_selectors_match_the_pods_they_mean(built):
    for name, _, env, docs in each_build(built):
        pods = pod_labels(docs)
        services = {s["metadata"]["name"]: s for s in of_kind(docs, "Service")}
        for svc_name, svc in services.items():
            # A Service is named after the workload whose pods it reaches (DATABASE_HOST=db, ...).
            assert selects(svc["spec"]["selector"], pods[svc_name]), f"{name}/{env}: Service {svc_name}"
            others = [n for n, labels in pods.items() if n != svc_name and selects(svc["spec"]["selector"], labels)]
            assert not others, f"{name}/{env}: Service {svc_name} also selects {others}"
        deployment = named(docs, "Deployment", "app")
        assert selects(deployment["spec"]["selector"]["matchLabels"], pods["app"])
        pdb = named(docs, "PodDisruptionBudget", "app")
        assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
        hpa = named(docs, "HorizontalPodAutoscaler", "app")
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "app"}
        assert "replicas" not in deployment["spec"], "the autoscaler owns the replica count"
        for policy in of_kind(docs, "NetworkPolicy"):
            selector = policy["spec"]["podSelector"].get("matchLabels")
            if selector:
                assert any(selects(selector, labels) for labels in pods.values()), f"{name}/{env}: {policy['metadata']['name']}"
            for rule in policy["spec"].get("ingress", []) + policy["spec"].get("egress", []):
                for peer in rule.get("from", []) + rule.get("to", []):
                    if "podSelector" in peer and "namespaceSelector" not in peer:
                        assert any(selects(peer["podSelector"]["matchLabels"], labels) for labels in pods.values()), \
                            f"{name}/{env}: {policy['metadata']['name']} names pods that do not exist"
        # Generated names: every reference to the settings and secrets is rewritten to the hashed name.
        names = {d["metadata"]["name"] for d in docs if d["kind"] in ("ConfigMap", "Secret")}
        for _, template in pod_templates(docs):
            for volume in template["spec"].get("volumes", []):
                ref = (volume.get("secret") or {}).get("secretName") or (volume.get("configMap") or {}).get("name")
                assert ref is None or ref in names, f"{name}/{env}: volume {volume['name']} names {ref}"
            for c in template["spec"]["containers"]:
                for source in c.get("envFrom", []):
                    assert source["configMapRef"]["name"] in names


def test_network_paths_are_only_those_needed(built):
    for name, project, env, docs in each_build(built):
        a = answers(project)
        policies = {p["metadata"]["name"]: p["spec"] for p in of_kind(docs, "NetworkPolicy")}
        deny = policies["default-deny"]
        assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "ingress": [], "egress": []}
        ingress_from = [peer for spec in policies.values() if spec["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/component") == "app"
                        for rule in spec.get("ingress", []) for peer in rule["from"]]
        namespaces = {peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for peer in ingress_from}
        expected = {a["kubernetes_ingress_namespace"]} | ({a["kubernetes_monitoring_namespace"]} if a["monitoring"] != "none" else set())
        assert namespaces == expected, f"{name}/{env}"
        if a["database"] != "none":
            rule = policies["db-from-clients"]["ingress"][0]
            clients = {peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for peer in rule["from"]}
            jobs = {j["metadata"]["name"] for j in of_kind(docs, "Job")}
            assert clients == {"app"} | jobs and jobs >= {"db-roles"}, f"{name}/{env}: {clients}"
            assert rule["ports"] == [{"protocol": "TCP", "port": 5432 if a["database"] == "postgres" else 3306}]
        else:
            assert not any(n.startswith("db") for n in policies)


def test_metrics_are_scraped_on_the_port_the_app_serves_them(built):
    """metrics_port apart from app_port: a port of its own ("metrics") in the pod and the Service,
    scraped by the ServiceMonitor and open to Prometheus only; else the HTTP port."""
    seen = set()
    for name, project, env, docs in each_build(built):
        a = answers(project)
        monitors = of_kind(docs, "ServiceMonitor")
        if not monitors:
            continue
        separate = str(a.get("metrics_port") or a["app_port"]) != str(a["app_port"])
        seen.add(separate)
        port_name = "metrics" if separate else "http"
        assert [e["port"] for e in monitors[0]["spec"]["endpoints"]] == [port_name], f"{name}/{env}"
        policy = named(docs, "NetworkPolicy", "app-from-prometheus")["spec"]["ingress"][0]["ports"]
        assert policy == [{"protocol": "TCP", "port": port_name}], f"{name}/{env}"
        container = named(docs, "Deployment", "app")["spec"]["template"]["spec"]["containers"][0]
        service = named(docs, "Service", "app")["spec"]["ports"]
        if separate:
            assert {"name": "metrics", "containerPort": int(a["metrics_port"])} in container["ports"]
            assert {"name": "metrics", "port": int(a["metrics_port"]), "targetPort": "metrics"} in service
        else:
            assert [p["name"] for p in container["ports"]] == ["http"] and [p["name"] for p in service] == ["http"]
    assert seen == {True, False}, "the variants cover both"


def test_containers_have_probes_and_the_compose_sizes(built):
    for name, project, env, docs in each_build(built):
        compose = compose_config(project, env)["services"]
        for workload, template in pod_templates(docs):
            for c in template["spec"]["containers"]:
                where = f"{name}/{env}/{c['name']}"
                if workload["kind"] not in ("Job", "CronJob"):
                    assert {"startupProbe", "readinessProbe", "livenessProbe"} <= set(c), where
                limits = c["resources"]["limits"]
                assert set(c["resources"]["requests"]) == {"cpu", "memory"}, where
                if c["name"] == "db-backup":  # the dump client's size (catalogue.SIZES), not a Compose service here
                    assert c["resources"] == resources(SIZES["db-backup"], PROFILES[env]["scale"]), where
                    continue
                expected = compose[compose_service_of(c)]["deploy"]["resources"]["limits"]
                assert float(limits["cpu"].removesuffix("m")) / 1000 == float(expected["cpus"]), where
                assert int(limits["memory"].removesuffix("Mi")) * 1024 * 1024 == int(expected["memory"]), where


def test_images_are_the_compose_images(built):
    for name, project, env, docs in each_build(built):
        compose = compose_config(project, env)["services"]
        app_image = answers(project)["image_name"]
        for _, template in pod_templates(docs):
            for c in template["spec"]["containers"]:
                if c["name"] in ("app", "migrate"):
                    assert c["image"] == f"{app_image}:dev"  # the deploy script sets the digest
                else:
                    assert c["image"] == compose[compose_service_of(c)]["image"], f"{name}/{env}/{c['name']}"


def test_no_secret_value_outside_secrets(built):
    for name, project, env, docs in each_build(built):
        values = {p.name: p.read_text().strip() for p in (project / "secrets" / env).iterdir() if p.is_file()}
        values = {k: v for k, v in values.items() if len(v) >= 8}
        assert values, f"{name}/{env}: init-env.sh made no secrets"
        rendered = "\n".join(p.read_text() for p in (project / "kubernetes").rglob("*.yaml"))
        others = yaml.safe_dump_all([d for d in docs if d["kind"] != "Secret"])
        for key, value in values.items():
            assert value not in rendered and value not in others, f"{name}/{env}: {key} appears outside a Secret"
        secrets = {s["metadata"]["name"].rsplit("-", 1)[0]: s for s in of_kind(docs, "Secret")}
        if "secrets" in secrets:
            data = secrets["secrets"]["data"]
            for key, encoded in data.items():
                assert base64.b64decode(encoded).decode().strip() == (project / "secrets" / env / key).read_text().strip()


def test_each_pod_mounts_only_the_secrets_it_reads(built):
    for name, _, env, docs in each_build(built):
        for workload, template in pod_templates(docs):
            mounted = {item["key"] for v in template["spec"].get("volumes", []) if "secret" in v and v["name"] == "secrets"
                       for item in v["secret"]["items"]}
            files = {e["value"].removeprefix("/run/secrets/") for c in template["spec"]["containers"]
                     for e in c.get("env", []) if e.get("value", "").startswith("/run/secrets/")}
            assert files <= mounted, f"{name}/{env}/{workload['metadata']['name']}"
            if workload["metadata"]["name"] == "app":
                assert mounted == files, f"{name}/{env}: the app mounts {mounted - files} it does not read"


def test_autoscaling_ranges_follow_the_environments(built):
    for name, project, env, docs in each_build(built):
        a = answers(project)
        hpa = named(docs, "HorizontalPodAutoscaler", "app")["spec"]
        cap = {"dev": 1, "staging": 2, "production": None}[env]
        low = a["app_replicas"] if cap is None else min(cap, a["app_replicas"])
        high = a["app_max_replicas"] if cap is None else min(cap, a["app_max_replicas"])
        assert (hpa["minReplicas"], hpa["maxReplicas"]) == (low, max(low, high)), f"{name}/{env}"
        assert {m["resource"]["name"] for m in hpa["metrics"]} == {"cpu", "memory"}
        assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 300
        rolling = named(docs, "Deployment", "app")["spec"]["strategy"]["rollingUpdate"]
        assert rolling["maxUnavailable"] == 0


def test_ingress_has_the_host_and_tls_of_each_environment(built):
    for name, project, env, docs in each_build(built):
        a = answers(project)
        ingress = named(docs, "Ingress", "app")
        assert ingress["spec"]["ingressClassName"] == a["kubernetes_ingress_class"]
        tls_here = a["tls"] != "none" and env != "dev"
        host = ingress["spec"]["rules"][0]["host"]
        assert host == (a.get(f"domain_{env}") or "localhost")
        assert bool(ingress["spec"].get("tls")) == tls_here, f"{name}/{env}"
        if tls_here:
            secret = ingress["spec"]["tls"][0]["secretName"]
            if a["tls"] == "acme":
                assert ingress["metadata"]["annotations"]["cert-manager.io/cluster-issuer"] == a["kubernetes_cluster_issuer"]
            else:
                tls = named(docs, "Secret", secret)
                assert tls["type"] == "kubernetes.io/tls"


def test_statefulset_databases_are_backed_up_and_verified_by_cron_jobs(built):
    """PostgreSQL or MariaDB in a StatefulSet: a daily backup CronJob at backup_time and its verification an
    hour later, one run at a time, bounded history; both in the database's image, the backup's
    scripts from the project's own scripts/ (ConfigMap), the volume claim db-backups; the backup
    pod alone reaches the database with the backup role's password, the verification reaches
    nothing and holds only the signing key."""
    checked = set()
    for name, project, env, docs in each_build(built):
        a = answers(project)
        jobs = {j["metadata"]["name"]: j for j in of_kind(docs, "CronJob")}
        if a["database"] == "none" or of_kind(docs, "Cluster"):
            assert not jobs, f"{name}/{env}: {list(jobs)}"
            continue
        assert set(jobs) == {"db-backup", "db-verify-backup"}, f"{name}/{env}"
        hour, minute = (int(x) for x in a["backup_time"].split(":"))
        assert jobs["db-backup"]["spec"]["schedule"] == f"{minute} {hour} * * *"
        assert jobs["db-verify-backup"]["spec"]["schedule"] == f"{minute} {(hour + 1) % 24} * * *"
        scripts = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("db-backup-scripts"))
        for job in jobs.values():
            spec = job["spec"]
            assert spec["concurrencyPolicy"] == "Forbid" and spec["timeZone"] == "Etc/UTC"
            assert spec["successfulJobsHistoryLimit"] <= 3 and spec["failedJobsHistoryLimit"] <= 3
            pod = spec["jobTemplate"]["spec"]["template"]["spec"]
            (c,) = pod["containers"]
            script = c["command"][-1].rsplit("/", 1)[1]
            assert (project / "scripts/kubernetes/in-cluster" / script).read_text() == scripts["data"][script]
            assert scripts["data"]["db.sh"] == (project / "scripts/lib/db.sh").read_text()
            claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v]
            assert claims == ["db-backups"] and named(docs, "PersistentVolumeClaim", "db-backups")
        mounted = {job: {i["key"] for v in jobs[job]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["volumes"]
                         if "secret" in v for i in v["secret"]["items"]} for job in jobs}
        assert mounted == {"db-backup": {"db_backup_password", "backup_signing_key"}, "db-verify-backup": {"backup_signing_key"}}
        policies = {p["metadata"]["name"]: p["spec"] for p in of_kind(docs, "NetworkPolicy")}
        port = {"postgres": 5432, "mariadb": 3306}[a["database"]]
        assert policies["db-backup-to-db"]["egress"][0]["ports"] == [{"protocol": "TCP", "port": port}]
        assert policies["db-from-backup"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": port}]
        reaching_out = [p for p in policies.values() if p["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/component") == "db-verify-backup"]
        assert not reaching_out, "the verification needs no network"
        checked.add(a["database"])
    assert checked == {"postgres", "mariadb"}


# --- the alert rules -------------------------------------------------------------------------------------

def test_the_prometheus_rule_carries_composes_rules_and_passes_their_tests(built, tmp_path):
    promtool = require_tool("promtool")
    checked = 0
    for name, project, env, docs in each_build(built):
        rules = [d for d in docs if d["kind"] == "PrometheusRule"]
        if not rules:
            continue
        groups = rules[0]["spec"]["groups"]
        compose_rules = yaml.safe_load((project / "config/prometheus/rules/alerts.yml").read_text())["groups"]
        by_alert = {r["alert"]: r for g in compose_rules for r in g["rules"]}
        alerts = {r["alert"] for g in groups for r in g["rules"]}
        assert "ServiceDown" in alerts and "ProxyDown" not in alerts
        for g in groups:
            for r in g["rules"]:
                assert r == by_alert[r["alert"]], f"{name}: {r['alert']} differs from Compose's"
        work = tmp_path / f"{name}-{env}"
        (work / "rules").mkdir(parents=True)
        (work / "rules" / "alerts.yml").write_text(yaml.safe_dump({"groups": groups}))
        run(promtool, "check", "rules", work / "rules" / "alerts.yml")
        tests = yaml.safe_load((project / "config/prometheus/tests/alerts.test.yml").read_text())
        for case in tests["tests"]:
            case["alert_rule_test"] = [t for t in case.get("alert_rule_test", []) if t["alertname"] in alerts]
        tests["tests"] = [case for case in tests["tests"] if case["alert_rule_test"]]
        (work / "tests").mkdir()
        (work / "tests" / "alerts.test.yml").write_text(yaml.safe_dump(tests))
        proc = run(promtool, "test", "rules", "alerts.test.yml", cwd=work / "tests")
        assert "SUCCESS" in proc.stdout
        checked += 1
    assert checked


# --- the deploy script's build -------------------------------------------------------------------------

def test_the_release_build_pins_the_digest_and_version(built):
    name, (project, envs) = next((n, b) for n, b in built.items() if "production" in b[1])
    digest = "sha256:" + "ab" * 32
    ref = f"registry.example/app:v7@{digest}"
    script = ("source scripts/lib/common.sh; source scripts/lib/release.sh; source scripts/lib/kubernetes.sh; "
              f"kubernetes_build production {ref} v7")
    proc = run("bash", "-c", script, cwd=project)
    docs = [d for d in yaml.safe_load_all(Path(proc.stdout.strip()).read_text()) if d]
    for workload, template in pod_templates(docs):
        for c in template["spec"]["containers"]:
            if c["name"] in ("app", "migrate"):
                assert c["image"] == ref
                version = [e["value"] for e in c["env"] if e["name"] == "APP_VERSION"]
                assert version == ["v7"], f"{workload['metadata']['name']}: {version}"
    assert not (project / ".deploy/production/kubernetes/manifests.yaml.partial").exists()


# --- checkov -------------------------------------------------------------------------------------------

CHECKOV = ROOT / "tests" / "lab" / ".state" / "checkov" / "bin" / "checkov"


def checkov(path: Path, *args: str | Path) -> dict:
    if not CHECKOV.exists():
        pytest.fail("checkov is not installed: run tests/lab/install-tools.sh", pytrace=False)
    proc = run(CHECKOV, "--file", path, "--framework", "kubernetes", "--skip-download", "--quiet", "--output", "json",
               *args, check=False)
    report = json.loads(proc.stdout)
    return report[0] if isinstance(report, list) else report


def test_checkov_finds_nothing_but_the_documented_exceptions(built, tmp_path):
    """With the project's kubernetes/.checkov.yaml no check fails; without it, exactly the checks it
    skips fail (none of its exceptions is stale)."""
    for name, project, env, docs in each_build(built):
        if env == "dev" and len(built[name][1]) > 1:
            continue  # one environment of a variant: the others differ only in sizes and hosts
        path = tmp_path / f"{name}-{env}.yaml"
        path.write_text(yaml.safe_dump_all(docs))
        config = project / "kubernetes" / ".checkov.yaml"
        report = checkov(path, "--config-file", config)
        assert report["summary"]["failed"] == 0 and report["summary"]["parsing_errors"] == 0, \
            f"{name}/{env}: {[c['check_id'] for c in report['results']['failed_checks']]}"
        skipped = set(yaml.safe_load(config.read_text())["skip-check"])
        bare = checkov(path)
        assert {c["check_id"] for c in bare["results"]["failed_checks"]} == skipped, name


def test_each_deploy_step_finds_what_its_pods_need(built):
    """scripts/kubernetes/deploy.sh applies in steps by component label: everything else, then each
    Job, then the app. A pod's ServiceAccount, Secrets and ConfigMaps must be applied by its own
    step or an earlier one (a Job whose ServiceAccount comes later never starts)."""
    for name, _, env, docs in each_build(built):
        jobs = [d["metadata"]["name"] for d in of_kind(docs, "Job")]
        component = lambda d: d["metadata"].get("labels", {}).get("app.kubernetes.io/component")  # noqa: E731
        steps = [[d for d in docs if component(d) not in ["app", *jobs]]] + \
                [[d for d in docs if component(d) == job] for job in ("db-roles", "migrate") if job in jobs] + \
                [[d for d in docs if component(d) == "app"]]
        assert sum(len(step) for step in steps) == len(docs), f"{name}/{env}: an object no step applies"
        available: set[tuple[str, str]] = set()
        for step in steps:
            available |= {(d["kind"], d["metadata"]["name"]) for d in step}
            for workload in [d for d in step if d["kind"] in WORKLOADS]:
                spec = workload["spec"]["template"]["spec"]
                needs = {("ServiceAccount", spec["serviceAccountName"])}
                needs |= {("Secret", v["secret"]["secretName"]) for v in spec["volumes"] if "secret" in v}
                needs |= {("ConfigMap", v["configMap"]["name"]) for v in spec["volumes"] if "configMap" in v}
                needs |= {("ConfigMap", s["configMapRef"]["name"]) for c in spec["containers"] for s in c.get("envFrom", [])}
                assert needs <= available, f"{name}/{env}: {workload['metadata']['name']} needs {needs - available} first"


def test_the_release_build_overrides_images_as_compose_does(built, tmp_path):
    """IMAGE_MIRROR and X_IMAGE in env/ENV.env replace the pins in the deploy's build exactly as
    they do in Compose's model of that environment."""
    name, (original, envs) = next((n, b) for n, b in built.items() if "production" in b[1])
    project = tmp_path / "project"
    shutil.copytree(original, project, ignore=shutil.ignore_patterns(".deploy"))
    env_file = project / "env/production.env"
    env_file.write_text(env_file.read_text() + "IMAGE_MIRROR=mirror.example:5000\nREDIS_IMAGE=registry.example/redis@sha256:"
                        + "cd" * 32 + "\nPOSTGRES_IMAGE=registry.example:5000/db/postgres:17.9\n")
    script = ("source scripts/lib/common.sh; source scripts/lib/release.sh; source scripts/lib/kubernetes.sh; "
              f"kubernetes_build production registry.example/app:v7@sha256:{'ab' * 32} v7")
    proc = run("bash", "-c", script, cwd=project)
    docs = [d for d in yaml.safe_load_all(Path(proc.stdout.strip()).read_text()) if d]
    compose = compose_config(project, "production")["services"]
    compared = 0
    for _, template in pod_templates(docs):
        for c in template["spec"]["containers"]:
            if c["name"] not in ("app", "migrate"):
                assert c["image"] == compose[compose_service_of(c)]["image"], f"{name}: {c['name']}"
                assert "example" in c["image"]
                compared += 1
    assert compared >= 2
