"""Local conformance workers are forked warm from one template process per environment, kept across runs;
crashes and hangs of forked workers keep their meaning (the canary tests), and without a template the workers
start as new processes with the same outcomes."""

from __future__ import annotations

import pytest

from delegate_sdk.conformance import forkserver, run_conformance
from delegate_sdk.conformance.runner import RunConfig, collect_cases, plan
from delegate_sdk.conformance.scheduler import LocalPool, Scheduler

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("canaries_env")]

PATTERN = r"^op/(add|relu)/normal$"


def test_runs_share_one_template_per_environment(monkeypatch):
    first = run_conformance("canary_good", pattern=PATTERN, jobs=2)
    template = forkserver.template_for(forkserver.worker_env())
    second = run_conformance("canary_good", pattern=PATTERN, jobs=2)
    assert forkserver.template_for(forkserver.worker_env()) is template and template.alive()
    assert [r.outcome for r in first.cases] == [r.outcome for r in second.cases] == ["PASS", "PASS"]
    monkeypatch.setenv("DSDK_TEST_OTHER_ENV", "1")  # another environment: a template of its own, the old one stops
    other = forkserver.template_for(forkserver.worker_env())
    assert other is not template and other.alive() and not template.alive()


def test_without_a_template_workers_start_as_new_processes_with_the_same_results(tmp_path):
    cases = collect_cases("canary_nan_to_zero")
    units = plan(cases, pattern=r"^op/(add|log)/(normal|edge)$")
    cfg = RunConfig(plugin="canary_nan_to_zero", precision="fp32", options={}, seed=0, jobs=2, timeout=60,
                    bisect=False, precision_spec=None)
    cold = Scheduler(LocalPool(str(tmp_path), warm=False)).run(cfg, cases, units, str(tmp_path))
    warm = run_conformance("canary_nan_to_zero", pattern=r"^op/(add|log)/(normal|edge)$", jobs=2, bisect=False)
    assert [(r.id, r.outcome, r.detail) for r in cold] == [(r.id, r.outcome, r.detail) for r in warm.cases]
    assert {r.outcome for r in cold} == {"PASS", "FAIL_MISMATCH"}
