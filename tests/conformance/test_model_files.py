"""``conform --model FILE.pt2``: a program a user exported becomes a whole-model conformance case, judged by
SQNR and bisected like the corpus's models, and a file that cannot be one is a clear usage error."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from delegate_sdk.conformance import run_conformance
from delegate_sdk.conformance.model_files import file_cases
from delegate_sdk.errors import UsageError

pytestmark = pytest.mark.usefixtures("canaries_env")


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.fc = torch.nn.Linear(4 * 6 * 6, 5)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = torch.relu(self.conv(x))
        return self.fc(features.flatten(1)), features


def _save(tmp_path, module, args, name="net", kwargs=None):
    torch.manual_seed(0)
    path = tmp_path / f"{name}.pt2"
    torch.export.save(torch.export.export(module.eval(), args, kwargs=kwargs), str(path))
    return path


@pytest.mark.slow
def test_a_users_program_passes_on_a_faithful_plugin_and_fails_on_a_wrong_one(tmp_path):
    torch.manual_seed(0)
    path = _save(tmp_path, Net(), (torch.randn(1, 3, 8, 8),))
    good = run_conformance("canary_good", models=[path], pattern=r"^model/file_", jobs=1)
    (r,) = good.cases
    assert (r.id, r.outcome, r.kind) == ("model/file_net/normal", "PASS", "model")
    assert r.tolerance["kind"] == "sqnr" and r.metrics["sqnr_db"] is not None
    assert r.nodes_delegated == r.nodes_total > 0
    assert f"--model {path}" in good.command
    # rank-4 results handed back in the wrong layout: the model fails and is bisected
    bad = run_conformance("canary_layout", models=[path], pattern=r"^model/file_", jobs=1)
    (r,) = bad.cases
    assert r.outcome == "FAIL_MISMATCH", (r.outcome, r.detail)
    assert "first diverging" in r.detail
    assert f"--model {path}" in r.repro


@pytest.mark.slow
def test_the_cli_takes_model_files_and_reports_them(tmp_path):
    from delegate_sdk.cli import main

    path = _save(tmp_path, Net(), (torch.randn(1, 3, 8, 8),))
    res = CliRunner().invoke(main, ["conform", "--plugin", "canary_good", "--model", str(path), "-k",
                                    "^model/file_", "--jobs", "1", "--report-dir", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    assert "model/file_net" in (tmp_path / "r" / "report.json").read_text()
    res = CliRunner().invoke(main, ["conform", "--plugin", "canary_good", "--model", str(tmp_path / "nope.pt2")])
    assert res.exit_code == 2 and "nope.pt2" in res.output and "no such file" in " ".join(res.output.split())


def test_files_that_cannot_be_a_case_are_usage_errors_naming_the_file(tmp_path):
    junk = tmp_path / "junk.pt2"
    junk.write_bytes(b"not a zip")
    with pytest.raises(UsageError, match=r"junk.pt2 is not a .pt2 file written by torch.export.save"):
        file_cases([junk])

    class Ids(torch.nn.Module):
        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return ids * 2

    ints = _save(tmp_path, Ids(), (torch.arange(4),), name="ids")
    with pytest.raises(UsageError, match=r"ids.pt2: input #0 is int64, whose valid range the file does not say"):
        file_cases([ints])

    class Kw(torch.nn.Module):
        def forward(self, x: torch.Tensor, *, scale: torch.Tensor) -> torch.Tensor:
            return x * scale

    kw = _save(tmp_path, Kw(), (torch.randn(3),), name="kw", kwargs={"scale": torch.randn(3)})
    with pytest.raises(UsageError, match=r"kw.pt2: the program takes keyword arguments"):
        file_cases([kw])

    net = _save(tmp_path, Net(), (torch.randn(1, 3, 8, 8),))
    other = tmp_path / "sub"
    other.mkdir()
    twin = _save(other, Net(), (torch.randn(1, 3, 8, 8),))
    with pytest.raises(UsageError, match=r"both become case model/file_net: rename one"):
        file_cases([net, twin])
    (case,) = file_cases([net])
    assert case.id == "model/file_net" and [s.inputs[0].shape for s in case.samples] == [(1, 3, 8, 8)]
