"""A model called the way transformers models are (keyword tensors, a dict out) lowers, saves, loads and runs
on every vendor plugin, each at its default precision."""

from __future__ import annotations

import pytest
import torch

import delegate_sdk
from delegate_sdk.conformance.tolerance import sqnr_db
from dsdk_test_plugins.models import KeywordNet

pytestmark = pytest.mark.slow

#: default precision of each plugin -> the SQNR its output must reach here
PLUGINS = {"xnnpack": 60.0, "qnn": 20.0, "coreml": 30.0, "arm_ethos": 20.0}


@pytest.mark.parametrize("backend", sorted(PLUGINS))
def test_keyword_and_dict_inputs_on_a_vendor_plugin(backend, tmp_path):
    torch.manual_seed(0)
    model = KeywordNet().eval()
    kwargs = {"input_ids": torch.randn(2, 4, 6), "attention_mask": torch.ones(2, 4)}
    calib = [{"input_ids": torch.randn(2, 4, 6), "attention_mask": torch.ones(2, 4)} for _ in range(4)]
    prog = delegate_sdk.lower(model, (), [backend], example_kwargs=kwargs, calibration=calib)
    assert prog.summary().nodes_delegated > 0
    prog.save(tmp_path / "kw.dsdk")
    loaded = delegate_sdk.load(tmp_path / "kw.dsdk")
    reordered = {"attention_mask": kwargs["attention_mask"], "input_ids": kwargs["input_ids"]}
    out = loaded(**reordered)
    with torch.no_grad():
        ref = model(**kwargs)
    assert set(out) == {"hidden", "pooled"}
    for key in ("hidden", "pooled"):
        assert out[key].shape == ref[key].shape
        assert sqnr_db(ref[key], out[key]) >= PLUGINS[backend], (key, sqnr_db(ref[key], out[key]))
