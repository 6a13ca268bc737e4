"""Real architectures nobody here wrote, through every vendor plugin at its default precision and ``compare``.

Architectures come from maintained libraries (``conformance/zoo.py``, also ``conform --suite zoo``):
``transformers`` (ResNet, MobileNetV2, EfficientNet with its squeeze-excite and swish, PP-LCNet (MobileNetV3-style),
HGNetV2 (SqueezeNet-style fan-out and concat), ViT, BERT called with
``input_ids`` / ``attention_mask`` keywords) and ``torch.nn`` (a 2-layer LSTM). Random weights, tiny configs,
small inputs: CI time, not accuracy on data, is the limit; batch-norm statistics are re-estimated on random
images so that activations have real ranges.

Each plugin must lower the model (a failure is a row with its error: this test fails on it), delegate a
real share of its multiply-accumulates, and be accurate on held-out inputs. Float precisions have an SQNR
floor. An int8 result on random weights says more about the weights than the backend (MobileNetV2 collapses
to about 0 dB on every int8 toolchain here), so the two int8 plugins, whose quantizers are independent
(QNN's ONNX QDQ flow, our TOSA quantizer for Vela), are held to each other on the same model: at most
``INT8_GAP`` dB apart. Independent calibrations differ by up to ~7 dB on these nets (PP-LCNet: qnn 26.1,
arm_ethos 19.0, and ExecuTorch's XNNPACK quantizer 16.3; HGNetV2: 34.7, 27.9, 29.3); the gap leaves room for
that and still catches a broken quantizer, as it caught a bias lost to int32 overflow (arm_ethos on
EfficientNet: 0 dB where qnn, and ExecuTorch's XNNPACK int8, get 49.8). XNNPACK int8 as a third reference
cost CI over 100 s.
"""

from __future__ import annotations

import importlib

import pytest
import torch

from delegate_sdk.comparison import Config, compare
from delegate_sdk.conformance.corpus import load_corpus

#: the builders the conformance corpus's zoo suite uses (conformance/zoo.py), so the two never drift apart
ZOO = importlib.import_module(f"{load_corpus().__name__}.zoo").ZOO

pytestmark = pytest.mark.slow

#: SQNR floor (dB) of the float plugins at their default precision (fp32, fp16) on these models
FLOOR = {"xnnpack": 60.0, "coreml": 20.0}
#: the int8 plugins (int8 is their default), held to each other on the same model
INT8 = ("qnn", "arm_ethos")
INT8_GAP = 12.0


@pytest.mark.parametrize("name", sorted(ZOO))
def test_every_plugin_lowers_and_matches_eager_on_a_real_architecture(name):
    torch.manual_seed(0)
    model, args, kwargs = ZOO[name]()
    configs = [Config(((b, ""),)) for b in (*FLOOR, *INT8)]
    c = compare(model, args, configs, example_kwargs=kwargs or None, calibration=4, eval_inputs=2, calls=2)
    failed = {r.label: r.error for r in c.results if not r.ok}
    assert not failed, failed
    float_rows, int8_rows = c.results[:len(FLOOR)], c.results[len(FLOOR):]
    for r in c.results:
        assert r.nodes_delegated > 0, (r.label, r.refusals)
        if r.macs_total:
            assert r.macs_fraction >= 0.5, (r.label, r.macs_fraction, r.refusals)
    for r in float_rows:
        (backend, _), = r.config.entries
        assert r.sqnr_db is None or r.sqnr_db >= FLOOR[backend], (r.label, r.sqnr_db)
    int8 = {r.label: r.sqnr_db for r in int8_rows}
    assert all(label.endswith(":int8") for label in int8), int8
    finite = [v for v in int8.values() if v is not None]  # None: bit-exact
    assert len(finite) < 2 or max(finite) - min(finite) <= INT8_GAP, int8
