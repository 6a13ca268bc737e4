"""The precision vocabulary: a name means one thing everywhere, and an unknown one is refused at load."""

from __future__ import annotations

import pytest

from delegate_sdk.conformance import tolerance
from delegate_sdk.registry import Registry
from delegate_sdk.types import PRECISIONS, BackendInfo, Precision, is_quantized, resolve_precision


def _info(precisions, default=None, specs=()):
    return BackendInfo("b", "1", tuple(precisions), default or precisions[0], "f", 1, (1, 1),
                       precision_specs=tuple(specs))


def test_the_vocabulary_says_what_each_name_is():
    assert PRECISIONS["fp16"] == Precision("fp16", "float", "float16", description=PRECISIONS["fp16"].description)
    assert [n for n, p in PRECISIONS.items() if p.quantized] == ["int8", "a16w8", "int16", "a8w4", "int4"]
    assert (PRECISIONS["a16w8"].activation_bits, PRECISIONS["a16w8"].weight_bits) == (16, 8)
    assert is_quantized("int8") and not is_quantized("bf16")


@pytest.mark.parametrize("name, hint", [("float16", "fp16"), ("half", "fp16"), ("uint8", "int8"),
                                        ("qint8", "int8"), ("w8a16", "a16w8")])
def test_a_misspelled_precision_is_refused_with_the_name_it_probably_means(name, hint):
    with pytest.raises(ValueError, match=f"precision '{name}' is not in the core's vocabulary \\(did you mean "
                                         f"'{hint}'\\?\\)"):
        resolve_precision(name)


def test_w4a16_is_neither_guessed_as_float_nor_as_quantized():
    with pytest.raises(ValueError, match="'w4a16' is not in the core's vocabulary; use one of"):
        is_quantized("w4a16")


def test_a_plugin_may_declare_its_own_precision():
    q = Precision("a16w4", "quantized", activation_bits=16, weight_bits=4)
    info = _info(("a16w4", "fp32"), specs=(q,))
    info.check()
    assert info.precision("a16w4") is q and info.precision("fp32") is PRECISIONS["fp32"]
    # the tolerance follows the declaration: 16-bit activations, 4-bit weights
    assert tolerance.sqnr_floor(q) == 6.0 and tolerance.is_quantized(q)
    assert [p["name"] for p in info.to_json()["precision_specs"]] == ["a16w4", "fp32"]


@pytest.mark.parametrize("kwargs, message", [
    (dict(name="x", kind="float", dtype="float64"), "needs dtype one of"),
    (dict(name="x", kind="quantized", activation_bits=8), "weight_bits must be an integer"),
    (dict(name="x", kind="int"), "kind must be 'float' or 'quantized'"),
    (dict(name="x", kind="quantized", activation_bits=8, weight_bits=8, dtype="float32"), "not a dtype"),
])
def test_a_precision_declaration_must_make_sense(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Precision(**kwargs)


def test_backend_info_check():
    with pytest.raises(ValueError, match="redefines the core precision 'int8'"):
        _info(("int8",), specs=(Precision("int8", "quantized", activation_bits=16, weight_bits=8),)).check()
    with pytest.raises(ValueError, match="default_precision 'fp16' is not one of"):
        _info(("fp32",), default="fp16").check()
    with pytest.raises(ValueError, match="'half'"):
        _info(("fp32", "half")).check()


def test_a_plugin_with_an_unknown_precision_is_unavailable_naming_it_and_others_still_load():
    from delegate_sdk import hookimpl

    class Bad:
        @hookimpl
        def describe(self):
            return _info(("float16",))

        @hookimpl
        def claim(self, program, nodes, options):
            raise AssertionError

        @hookimpl
        def preprocess(self, program, options, calibration):
            raise AssertionError

        @hookimpl
        def init(self, blob, meta, options):
            raise AssertionError

        @hookimpl
        def execute(self, handle, inputs):
            raise AssertionError

    reg = Registry(load_entry_points=False, load_env=False)
    reg.register(Bad(), "bad")
    info = reg.get("bad").info()
    assert not info.available
    assert "plugin 'bad' is invalid: precision 'float16'" in info.unavailable_reason
    assert "did you mean 'fp16'" in info.unavailable_reason


def test_tolerances_follow_the_dtype_not_the_name():
    bf = Precision("my_bf16", "float", "bfloat16")
    assert tolerance.float_tolerance(bf)["judged_as"] == "bfloat16"
    assert tolerance.float_tolerance(bf)["rtol"] == tolerance.float_tolerance("bf16")["rtol"]
    assert tolerance.sqnr_floor("fp16") == 30.0 and tolerance.sqnr_floor("int8") == 12.0
