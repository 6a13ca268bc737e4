"""``--executor ray`` for ``conform`` and ``compare``: the same outcomes / rows as local workers, a dying and a
hung worker included, on a Ray cluster that the test starts (a head node with 2 CPUs on this machine, reached
through its address like any cluster).
"""

from __future__ import annotations

import pytest

import torch

from delegate_sdk.comparison import compare
from delegate_sdk.conformance import run_conformance
from delegate_sdk.ray_cluster import local_cluster

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("canaries_env")]


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    # its own cluster, stopped alone: tests of this module may run on both xdist workers at once. Its nodes
    # start where ~/.ray/auth_token exists, as on any machine that ever ran a local ray.init(): Ray then turns
    # token authentication on for `ray start`, and clients given the address could not connect
    home = tmp_path_factory.mktemp("home")
    (home / ".ray").mkdir()
    (home / ".ray" / "auth_token").write_text("f" * 64)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("HOME", str(home))
        cluster = local_cluster(nodes=1, cpus_per_node=2, temp_dir=str(tmp_path_factory.mktemp("ray")))
        address = cluster.__enter__()
    try:
        yield address
    finally:
        cluster.__exit__(None, None, None)


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


def _row(r):
    """A comparison row without its timings, where it ran and the artifact's bytes."""
    return (r.label, r.ok, r.error, r.nodes_total, r.nodes_delegated, r.nodes_hosted, r.partitions, r.coverage,
            r.macs_total, r.macs_delegated, r.refusals, [o.to_json() for o in r.outputs], r.estimate,
            r.compile_failures)


def _cnn():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(8 * 14 * 14, 10)).eval()
    return model, torch.randn(1, 3, 16, 16)


def test_compare_on_ray_gives_the_local_rows(ray_cluster):
    model, x = _cnn()
    cfgs = ["xnnpack:fp32", "xnnpack:int8", "arm_ethos:int8"]
    local = compare(model, (x,), cfgs, calls=3)
    remote = compare(model, (x,), cfgs, calls=3, executor="ray", address=ray_cluster)
    assert [_row(r) for r in remote.results] == [_row(r) for r in local.results]
    assert all(r.ok for r in remote.results) and remote.result("xnnpack:int8").sqnr_db < 60  # really quantized
    assert remote.recommendation.config == local.recommendation.config == "xnnpack:fp32"
    for r in remote.results:
        assert r.where.startswith("ray node ") and r.eager_latency_ms["median"] > 0
        assert r.eager_baseline == "the model"
        assert abs(r.artifact_bytes - local.result(r.label).artifact_bytes) < 64  # zip entry times differ
    assert all(r.where == "this host" and r.eager_latency_ms is None for r in local.results)
    # the artifact came back: loaded here on first use, it computes what the local lowering computes
    with torch.no_grad():
        assert torch.equal(remote.result("xnnpack:int8").program(x), local.result("xnnpack:int8").program(x))
    assert "Timed on Ray workers" in remote.to_markdown() and "Timed on Ray" not in local.to_markdown()


def test_compare_on_ray_a_dying_or_hung_configuration_is_a_row(ray_cluster):
    class CosExp(torch.nn.Module):
        def forward(self, x):
            return torch.cos(x) + torch.exp(x)

    x = torch.randn(4, 8)
    c = compare(CosExp(), (x,), ["canary_abort", "xnnpack"], calls=2, executor="ray", address=ray_cluster)
    rows = {r.label.split(":")[0]: r for r in c.results}
    assert "the Ray worker running it died" in rows["canary_abort"].error
    assert rows["xnnpack"].ok and rows["xnnpack"].nodes_delegated == rows["xnnpack"].nodes_total
    assert c.recommendation.config == rows["xnnpack"].label
    # the timeout counts from when the task starts on its worker: a short one is not eaten by worker start-up
    (hung,) = compare(CosExp(), (x,), ["canary_hang"], calls=2, executor="ray", address=ray_cluster,
                      timeout_s=5).results
    assert hung.error == "still running after 5 s on a Ray worker: stopped (--timeout)"


def test_compare_cli_on_ray(ray_cluster, tmp_path):
    from click.testing import CliRunner

    from delegate_sdk.cli import main

    res = CliRunner().invoke(main, ["compare", "dsdk_test_plugins.models:small_cnn", "--backends", "xnnpack",
                                    "--calls", "3", "--executor", "ray", "--address", ray_cluster, "--report-dir",
                                    str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "timed on ray node " in res.output
    assert '"where": "ray node ' in (tmp_path / "report.json").read_text()
    res = CliRunner().invoke(main, ["compare", "dsdk_test_plugins.models:small_cnn", "--backends", "xnnpack",
                                    "--timeout", "10"])
    assert res.exit_code == 2 and "executor='ray'" in res.output
