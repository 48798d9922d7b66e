"""The Kubernetes output's containers, run for real, without a cluster (none can run here).

A built overlay's pod specs are started with Docker as a kubelet would start them: the pod's user,
group and fsGroup, a read-only root filesystem, no capabilities and no new privileges, each emptyDir
as a tmpfs, each secret and ConfigMap volume as files with their modes (secrets 0440, group
fsGroup), each volume claim as a fresh volume whose root holds lost+found and belongs to fsGroup
(as a new ext4 volume does), the command and args with Kubernetes' $$ escapes undone, the
environment and envFrom, and the Services' names as network aliases. Then, in the order the deploy
script follows: the database and cache until their readiness probes pass, the db-roles and migrate
Jobs to a zero exit, the app until its HTTP readiness probe answers; a write through the app proves
its secrets, role and grants. What this does not test: the kubelet, the API server, scheduling,
NetworkPolicies, the autoscaler (docs/kubernetes.md).

Images: the Python example app built here; PostgreSQL, MariaDB and Redis are this lab's images (official
or stand-in: the e2e report says which)."""

from __future__ import annotations

import base64
import json
import os
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from conftest import run
from e2e_support import docker, inspect

pytestmark = pytest.mark.e2e

ANSWERS = dict(runtime="python", python_installer="pip", environments=["production"], cache="redis", monitoring="none", proxy="nginx", tls="none",
               process_manager="none", ci="none", orchestrators=["kubernetes"], app_replicas=1)
HELPER_IMAGE = "debian:bookworm-slim"  # prepares volumes (the lab's image: official or stand-in)


class Pods:
    """The pods of one built overlay, run with Docker as the kubelet would run their containers."""

    def __init__(self, docs: list[dict], prefix: str, workdir: Path):
        self.docs, self.prefix, self.workdir = docs, prefix, workdir
        self.network = f"{prefix}-net"
        self.containers: list[str] = []
        self.volumes: list[str] = []
        docker("network", "create", self.network)

    def object(self, kind: str, name: str) -> dict:
        return next(d for d in self.docs if d["kind"] == kind and d["metadata"]["name"] == name)

    def files(self, name: str, mode: int, gid: int, data: dict[str, str], items: list[dict] | None) -> Path:
        """A secret or ConfigMap volume: its keys (or the items asked for) as files."""
        folder = self.workdir / name
        folder.mkdir(parents=True)
        keys = [(i["key"], i["path"]) for i in items] if items else [(k, k) for k in data]
        for key, path in keys:
            target = folder / path
            target.write_bytes(data[key] if isinstance(data[key], bytes) else data[key].encode())
            target.chmod(mode)
            os.chown(target, 0, gid)
        folder.chmod(0o755)
        return folder

    def claim(self, workload: str, gid: int) -> str:
        """A new volume as a provisioner hands it over: lost+found at its root, group fsGroup."""
        volume = f"{self.prefix}-{workload}-data"
        docker("volume", "create", volume)
        self.volumes.append(volume)
        docker("run", "--rm", "-v", f"{volume}:/v", HELPER_IMAGE, "sh", "-c",
               f"mkdir -p /v/lost+found && chmod 0700 /v/lost+found && chown 0:{gid} /v && chmod 2775 /v")
        return volume

    def empty_dir(self, name: str, gid: int) -> str:
        """An emptyDir as the kubelet makes one: empty, mode 0777, then group fsGroup with setgid. (Docker's
        --tmpfs would copy the mode of the image's directory at that path, e.g. 0755 root.)"""
        volume = f"{self.prefix}-{name}-empty"
        docker("volume", "create", volume)
        self.volumes.append(volume)
        docker("run", "--rm", "-v", f"{volume}:/v", HELPER_IMAGE, "sh", "-c", f"chown 0:{gid} /v && chmod 2777 /v")
        return volume

    def pod_template(self, kind: str, name: str) -> dict:
        workload = self.object(kind, name)
        return workload["spec"]["jobTemplate"]["spec"]["template"] if kind == "CronJob" else workload["spec"]["template"]

    def start(self, kind: str, name: str, attempt: int = 0) -> str:
        workload = self.object(kind, name)
        pod = self.pod_template(kind, name)["spec"]
        security = pod["securityContext"]
        uid, gid, fs_group = security["runAsUser"], security["runAsGroup"], security["fsGroup"]
        (c,) = pod["containers"]
        assert c["securityContext"]["readOnlyRootFilesystem"] and c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        container = f"{self.prefix}-{name}-{attempt}"
        args = ["run", "--detach", "--name", container, "--network", self.network, "--network-alias", name,
                "--user", f"{uid}:{gid}", "--group-add", str(fs_group), "--read-only", "--cap-drop", "ALL",
                "--security-opt", "no-new-privileges:true"]
        for source in c.get("envFrom", []):
            for key, value in self.object("ConfigMap", source["configMapRef"]["name"])["data"].items():
                args += ["--env", f"{key}={value}"]
        for entry in c.get("env", []):
            if "valueFrom" in entry:  # the downward API: the pod's namespace only
                assert entry["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}, entry
                args += ["--env", f"{entry['name']}={workload['metadata']['namespace']}"]
            else:
                args += ["--env", f"{entry['name']}={entry['value']}"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for mount in c.get("volumeMounts", []):
            volume = volumes.get(mount["name"])
            if volume is None:  # a volume claim template
                args += ["--volume", f"{self.claim(name, fs_group)}:{mount['mountPath']}"]
            elif "persistentVolumeClaim" in volume:  # a claim of its own, shared by the pods that name it
                claim = volume["persistentVolumeClaim"]["claimName"]
                if f"{self.prefix}-{claim}-data" not in self.volumes:
                    self.claim(claim, fs_group)
                args += ["--volume", f"{self.prefix}-{claim}-data:{mount['mountPath']}"]
            elif "emptyDir" in volume:
                empty = self.empty_dir(f"{name}-{attempt}-{mount['name']}", fs_group)
                args += ["--mount", f"type=volume,src={empty},dst={mount['mountPath']},volume-nocopy"]
            elif "secret" in volume:
                secret = self.object("Secret", volume["secret"]["secretName"])
                data = {k: base64.b64decode(v) for k, v in secret["data"].items()}
                folder = self.files(f"{name}-{attempt}-{mount['name']}", volume["secret"]["defaultMode"], fs_group,
                                    data, volume["secret"].get("items"))
                args += ["--volume", f"{folder}:{mount['mountPath']}:ro"]
            elif "configMap" in volume:
                data = self.object("ConfigMap", volume["configMap"]["name"])["data"]
                folder = self.files(f"{name}-{attempt}-{mount['name']}", volume["configMap"]["defaultMode"], fs_group,
                                    data, None)
                args += ["--volume", f"{folder}:{mount['mountPath']}:ro"]
            else:
                pytest.fail(f"{name}: volume {mount['name']} of a kind this test does not run")
        command = [a.replace("$$", "$") for a in c.get("command", [])]
        rest = [a.replace("$$", "$") for a in c.get("args", [])]
        if command:
            args += ["--entrypoint", command[0], c["image"], *command[1:], *rest]
        else:
            args += [c["image"], *rest]
        docker(*args)
        self.containers.append(container)
        return container

    def probe(self, container: str, probe: dict) -> bool:
        if "exec" in probe:
            return docker("exec", container, *probe["exec"]["command"], check=False).returncode == 0
        port = probe["httpGet"]["port"]
        try:
            with urllib.request.urlopen(f"{self.url(container, port)}{probe['httpGet']['path']}", timeout=4) as answer:
                return answer.status == 200
        except OSError:
            return False

    def url(self, container: str, port: str | int) -> str:
        """http://ADDRESS:PORT of a container, PORT a number or the name of one of its ports."""
        if isinstance(port, str):
            (c,) = [c for d in self.docs if d["kind"] in ("Deployment", "StatefulSet")
                    for c in d["spec"]["template"]["spec"]["containers"] if container.startswith(f"{self.prefix}-{c['name']}-")]
            port = next(p["containerPort"] for p in c["ports"] if p["name"] == port)
        address = next(iter(inspect(container)["NetworkSettings"]["Networks"].values()))["IPAddress"]
        return f"http://{address}:{port}"

    def ready(self, kind: str, name: str, timeout: float = 180) -> str:
        container = self.start(kind, name)
        (c,) = self.object(kind, name)["spec"]["template"]["spec"]["containers"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.probe(container, c["readinessProbe"]) and self.probe(container, c["livenessProbe"]):
                return container
            if not inspect(container)["State"]["Running"]:
                break
            time.sleep(2)
        logs = docker("logs", "--tail", "40", container, check=False)
        pytest.fail(f"{kind} {name} never became ready:\n{logs.stdout[-3000:]}\n{logs.stderr[-3000:]}", pytrace=False)

    def run_once(self, kind: str, name: str, attempt: int = 0) -> tuple[int, str, str]:
        """One pod of a Job or CronJob to its end: exit code, stdout and stderr."""
        container = self.start(kind, name, attempt)
        code = int(docker("wait", container, timeout=600).stdout.strip())
        logs = docker("logs", container, check=False)
        return code, logs.stdout, logs.stderr

    def claim_files(self, claim: str, command: str) -> str:
        """A shell command run as root on a volume claim's files (mounted at /v)."""
        return docker("run", "--rm", "-v", f"{self.prefix}-{claim}-data:/v", HELPER_IMAGE, "sh", "-c", command).stdout

    def job(self, name: str) -> None:
        """A Job: its pod again until it exits 0, at most backoffLimit + 1 times (the database may still start)."""
        job = self.object("Job", name)
        for attempt in range(job["spec"]["backoffLimit"] + 1):
            container = self.start("Job", name, attempt)
            code = int(docker("wait", container, timeout=300).stdout.strip())
            if code == 0:
                return
            time.sleep(3)
        logs = docker("logs", "--tail", "40", container, check=False)
        pytest.fail(f"Job {name} failed:\n{logs.stdout[-3000:]}\n{logs.stderr[-3000:]}", pytrace=False)

    def remove(self) -> None:
        for container in self.containers:
            docker("rm", "--force", "--volumes", container, check=False)
        for volume in self.volumes:
            docker("volume", "rm", "--force", volume, check=False)
        docker("network", "rm", self.network, check=False)


@pytest.mark.parametrize("database", ["postgres", "mariadb"])
def test_the_pods_of_an_overlay_run_as_specified(copie_session, lab, tmp_path, database):
    answers = dict(ANSWERS, project_name=f"K8s pods {database}", database=database)
    result = copie_session.copy(extra_answers=answers)
    assert result.exit_code == 0, result.exception
    project = result.project_dir
    run(project / "scripts" / "init-env.sh", "production")
    image = yaml.safe_load((project / ".copier-answers.yml").read_text())["image_name"]
    run("git", "init", "-q", cwd=project)
    run("git", "add", "-A", cwd=project)
    run("git", "-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-qm", "rendered", cwd=project)
    run(project / "scripts" / "build.sh", "production", "v1", cwd=project, timeout=900)
    docker("tag", f"{image}:v1", f"{image}:dev")  # the overlay's image; the deploy script would set a digest
    built = run("kubectl", "kustomize", "--load-restrictor", "LoadRestrictionsNone", project / "kubernetes" / "overlays" / "production")
    docs = [d for d in yaml.safe_load_all(built.stdout) if d]
    pods = Pods(docs, f"k8s-pods-{database}-{os.getpid()}", tmp_path / "volumes")
    try:
        db = pods.ready("StatefulSet", "db")
        pods.ready("StatefulSet", "cache")
        pods.job("db-roles")
        pods.job("migrate")
        app = pods.url(pods.ready("Deployment", "app"), "http")
        request = urllib.request.Request(f"{app}/items", data=json.dumps({"name": "from a pod"}).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 201
        with urllib.request.urlopen(f"{app}/items", timeout=10) as answer:
            assert "from a pod" in answer.read().decode()
        the_backup_cron_jobs_back_up_and_verify(pods)
        # The database's files are its own, under the volume's root (PostgreSQL: pgdata/ beside lost+found).
        listing = docker("exec", db, "ls", "-A", "/var/lib/postgresql/data" if database == "postgres" else "/var/lib/mysql").stdout.split()
        assert "lost+found" in listing
        if database == "postgres":
            assert "pgdata" in listing
    finally:
        pods.remove()
        docker("image", "rm", "--force", f"{image}:dev", f"{image}:v1", check=False)


def the_backup_cron_jobs_back_up_and_verify(pods: Pods) -> None:
    """The database's CronJobs (scripts/kubernetes/in-cluster/): a signed backup in the volume claim
    db-backups as the backup role over the network, verified by a restore in a throwaway server of
    the verification pod; a tampered dump is refused, marked, and fails the Job."""
    code, out, err = pods.run_once("CronJob", "db-backup")
    assert code == 0, err[-3000:]
    backup = out.strip().splitlines()[-1]
    assert backup.endswith("Z") and len(backup) == 16, out
    code, out, err = pods.run_once("CronJob", "db-verify-backup")
    assert code == 0, err[-3000:]
    assert f"backup {backup} of production verified" in err
    files = pods.claim_files("db-backups", f"ls -A /v/production/{backup}; readlink /v/production/latest; cat /v/production/{backup}/counts.tsv").split()
    assert {"dump.sql.gz", "counts.tsv", "meta.env", "SHA256SUMS", "SHA256SUMS.sig", "verified"} <= set(files), files
    assert files.count(backup) == 1, "latest points to the backup"
    assert "items" in files and files[files.index("items") + 1] == "1", "the app's row is in the backup's counts"
    # The migrations' version, read by the backup role in the pod (none would mean it could not).
    meta = pods.claim_files("db-backups", f"cat /v/production/{backup}/meta.env")
    assert "SCHEMA_VERSION=" in meta and "SCHEMA_VERSION=none" not in meta, meta
    pods.claim_files("db-backups", f"printf x >>/v/production/{backup}/dump.sql.gz")
    code, out, err = pods.run_once("CronJob", "db-verify-backup", attempt=1)
    assert code != 0 and f"backup {backup} FAILED verification" in err and "checksum" in err, err[-2000:]
    files = pods.claim_files("db-backups", f"ls -A /v/production/{backup}").split()
    assert "verify-failed" in files and "verified" not in files, files
