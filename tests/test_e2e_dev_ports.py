"""Two projects' dev stacks on one host, each with the ports its render chose (no edit): both
come up and serve, and `scripts/urls.sh dev` says where, with the addresses Docker bound."""

from __future__ import annotations

import json
import re
import urllib.request

import pytest

from conftest import run
from e2e_support import Stack, docker
from extensions.environments import PROFILES, host_ports

pytestmark = pytest.mark.e2e

ANSWERS = dict(environments=["dev"], database="postgres", cache="none", monitoring="none", proxy="caddy",
               process_manager="none")
TEST_PORTS = range(20000, 23000)  # e2e_support.free_port's ranges: keep clear of them


def two_projects() -> list[str]:
    """Names whose default port blocks differ and stay clear of the test workers' ports."""
    chosen, blocks = [], set()
    for i in range(100):
        name = f"Side by side {i}"
        block = host_ports(PROFILES["dev"], re.sub(r"[^a-z0-9]+", "-", name.lower()))["http"]
        if block not in TEST_PORTS and block + 5 not in TEST_PORTS and block not in blocks:
            chosen.append(name)
            blocks.add(block)
        if len(chosen) == 2:
            return chosen
    raise AssertionError("no two project names found")


def test_dev_stacks_of_two_projects_run_side_by_side_with_no_edit(copie_session, lab):
    stacks = []
    try:
        for name in two_projects():
            result = copie_session.copy(extra_answers={**ANSWERS, "project_name": name})
            assert result.exit_code == 0, result.exception
            stacks.append(Stack(result.project_dir, "dev"))
        for stack in stacks:  # env/dev.env as rendered: no port is set by the test
            proc = stack.compose("up", "--detach", "--build", "--wait", "--wait-timeout", "300", check=False, timeout=900)
            assert proc.returncode == 0, proc.stderr[-2000:]
        seen = set()
        for stack in stacks:
            urls = run(stack.project / "scripts" / "urls.sh", "dev", cwd=stack.project).stdout
            app = re.search(r"^proxy\s+(http://\S+)", urls, re.M).group(1)
            db = re.search(r"^db\s+postgresql://127\.0\.0\.1:(\d+)", urls, re.M).group(1)
            assert app.startswith("http://127.0.0.1:") and app not in seen, urls
            seen.add(app)
            answer = json.loads(urllib.request.urlopen(app + stack.answers["health_path"], timeout=10).read())
            assert answer == {"status": "ok"}
            assert json.loads(urllib.request.urlopen(app + "/", timeout=10).read())["service"] == stack.answers["project_slug"]
            assert int(db) == int(app.rsplit(":", 1)[1]) + 2, "the database in the project's own block"
    finally:
        for stack in stacks:
            stack.down()
            docker("image", "rm", "--force", f"{stack.answers['image_name']}:dev", check=False)
