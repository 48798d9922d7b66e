"""The test harness itself: one run with e2e tests per machine at a time, and what an interrupted
run left behind removed before its names are used again (a CI run once failed on a database volume
an earlier, concurrent run had made under the same Compose project name)."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys

import pytest

from conftest import ROOT


def collect(lock, markexpr: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DP_E2E_LOCK": str(lock), "DP_E2E_LOCK_WAIT": "0"}
    env.pop("PYTEST_XDIST_WORKER", None)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--collect-only",
                           "-m", markexpr, "tests/test_harness.py"],
                          cwd=ROOT, env=env, text=True, capture_output=True, timeout=120)


def test_a_run_with_e2e_tests_waits_for_the_one_that_holds_the_lock(tmp_path):
    lock = tmp_path / "e2e.lock"
    with open(lock, "a+") as held:
        held.write("pid 1 in /elsewhere\n")
        held.flush()
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        refused = collect(lock, "e2e")
        # The fast tiers touch no Docker engine: they run beside an e2e run.
        fast = collect(lock, "not e2e and not slow")
    assert refused.returncode == 4, refused.stdout + refused.stderr
    assert "holds" in refused.stderr and "(pid 1 in /elsewhere): waiting for it, up to 0 s" in refused.stderr
    assert f"another test run with e2e tests still holds {lock} after 0 s" in refused.stderr
    assert fast.returncode == 0, fast.stdout + fast.stderr
    # Released (however the holder ended): the next run takes it and says who holds it now.
    taken = collect(lock, "e2e")
    assert taken.returncode in (0, 5), taken.stdout + taken.stderr
    assert lock.read_text().startswith("pid ") and "/elsewhere" not in lock.read_text()


@pytest.mark.e2e
def test_a_stack_an_interrupted_run_left_is_removed_before_its_name_is_used_again(copie_session, lab):
    """The CI failure this prevents: a database volume kept from an earlier run holds that run's
    passwords, so the new rendering's db-roles cannot log in and no deploy passes."""
    from e2e_support import Stack, docker
    from extensions.catalogue import IMAGES

    answers = dict(project_name="Harness leftovers", environments=["production"], database="postgres",
                   monitoring="none", cache="none", proxy="nginx", tls="none", process_manager="none")
    earlier = Stack.rendered(copie_session, answers)
    earlier.up("db")  # then the run is interrupted: nothing takes it down
    network = docker("inspect", "--format", "{{range $name, $_ := .NetworkSettings.Networks}}{{$name}} {{end}}",
                     earlier.container("db")).stdout.split()[0]
    helper = f"{earlier.name}-helper"  # a test's own container on the stack's network (no Compose label)
    docker("run", "--detach", "--name", helper, "--network", network, IMAGES["busybox"], "sleep", "600")
    left = earlier.leftovers()
    assert left["containers"] and left["volumes"] and left["networks"]

    stack = Stack.rendered(copie_session, answers)
    try:
        assert stack.name == earlier.name and stack.project != earlier.project
        assert stack.leftovers() == {"containers": [], "volumes": [], "networks": []}
        assert docker("ps", "-a", "--filter", f"name=^{helper}$", "--format", "{{.Names}}").stdout.strip() == ""
        # A fresh database, with this rendering's passwords: its roles can be set.
        stack.up("db")
        stack.compose("run", "--rm", "--no-TTY", "--no-deps", "db-roles")
    finally:
        stack.down()
        docker("rm", "--force", helper, check=False)
    assert stack.leftovers() == {"containers": [], "volumes": [], "networks": []}
