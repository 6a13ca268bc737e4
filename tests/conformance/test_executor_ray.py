"""``conform --executor ray``: the same outcomes as local workers, CRASH and TIMEOUT included, on a Ray cluster
that the test starts (a head node with 2 CPUs on this machine, reached through its address like any cluster).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from delegate_sdk.conformance import run_conformance

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("canaries_env")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    ray_bin = Path(sys.executable).with_name("ray")
    assert ray_bin.exists(), "Ray is part of the test install (delegate-sdk[ray])"
    port = _free_port()
    tmp = tmp_path_factory.mktemp("ray")
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    start = [str(ray_bin), "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
             "--disable-usage-stats", f"--temp-dir={tmp}"]
    proc = subprocess.run(start, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    yield f"127.0.0.1:{port}"
    subprocess.run([str(ray_bin), "stop", "--force"], capture_output=True, env=env, timeout=120)
    shutil.rmtree(tmp, ignore_errors=True)


def _comparable(report):
    """Per sample everything but timings (and the executor's own description)."""
    return {r.id: (r.outcome, r.raw_outcome, r.stage, r.nodes_total, r.nodes_delegated, r.metrics, r.tolerance,
                   tuple(r.checks), r.repro) for r in report.cases}


def test_ray_gives_the_local_outcomes_sample_by_sample(ray_cluster):
    pattern = r"^op/(add|log|conv2d)/(normal|edge|dynamic)$|^model/mlp/normal$"
    local = run_conformance("canary_nan_to_zero", pattern=pattern, jobs=2)
    units: list = []
    remote = run_conformance("canary_nan_to_zero", pattern=pattern, executor="ray", address=ray_cluster,
                             on_plan=units.extend)
    assert _comparable(remote) == _comparable(local)
    assert [r.detail for r in remote.cases] == [r.detail for r in local.cases]
    assert {r.outcome for r in remote.cases} == {"PASS", "FAIL_MISMATCH"}  # both kinds travelled
    ex = remote.executor
    assert ex["kind"] == "ray" and ex["cpus"] == 2 and ex["nodes"] == 1
    places = ex["where"]
    assert places and all(p.startswith("ray node ") for p in places), places
    assert sum(st["units"] for st in places.values()) == len(units)
    assert local.executor["kind"] == "local" and sum(st["units"] for st in local.executor["where"].values()) == \
        len(units)


def test_a_crash_and_a_hang_on_a_ray_worker_keep_their_meaning(ray_cluster):
    crash = run_conformance("canary_abort", pattern=r"^op/(add|cos)/normal$", executor="ray", address=ray_cluster)
    assert {r.id: r.outcome for r in crash.cases} == {"op/add/normal": "PASS", "op/cos/normal": "CRASH"}
    dead = next(r for r in crash.cases if r.id == "op/cos/normal")
    assert "SIGABRT" in dead.detail and dead.stage == "execute"
    assert dead.stack and dead.stack[0].endswith("in execute")  # the worker's stack, read on its node
    hang = run_conformance("canary_hang", pattern=r"^op/(add|exp)/normal$", executor="ray", address=ray_cluster,
                           timeout=15)
    assert {r.id: r.outcome for r in hang.cases} == {"op/add/normal": "PASS", "op/exp/normal": "TIMEOUT"}


def test_the_cli_runs_on_ray_and_says_where_the_time_went(ray_cluster, tmp_path):
    from click.testing import CliRunner

    from delegate_sdk.cli import main

    res = CliRunner().invoke(main, ["conform", "--plugin", "canary_good", "-k", r"^op/(add|relu)/normal$",
                                    "--executor", "ray", "--address", ray_cluster, "--report-dir", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "ray node " in res.output and "units" in res.output
    res = CliRunner().invoke(main, ["conform", "--plugin", "canary_good", "--address", ray_cluster])
    assert res.exit_code == 2 and "--executor ray" in res.output
