"""The numpy MIL interpreter, op by op, against the MIL op definitions (coremltools.converters.mil.mil.ops.defs).

Expectations are hand-computed or written as independent numpy/loop references
of the formulas in the op definitions, including their quirks (``inverse`` and
``log`` add ``epsilon``; ``gelu`` modes; ``upsample_bilinear`` grid rules).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from delegate_sdk_coreml import rules
from delegate_sdk_coreml.mil_errors import MILError, UnsupportedMILOpError
from delegate_sdk_coreml.mil_interpreter import Interpreter
from delegate_sdk_coreml.mil_kernels import implemented_ops
from delegate_sdk_coreml.mil_reader import (
    Function,
    MILProgram,
    Operation,
    Ref,
    TensorType,
)

F32, F16, I32, B = np.float32, np.float16, np.int32, np.bool_


def run(op: str, out: Any = F32, n_out: int = 1, ios: int = 17, **inputs: Any) -> Any:
    """Run one MIL op on immediate inputs; ``out`` is the declared output dtype (or a list of them)."""
    bindings = {}
    for k, v in inputs.items():
        if isinstance(v, list) and v and isinstance(v[0], np.ndarray):
            bindings[k] = tuple(v)
        else:
            bindings[k] = (v if isinstance(v, str) else np.asarray(v),)
    dtypes = out if isinstance(out, list) else [out] * n_out
    outs = tuple((f"out{i}", TensorType(d, None)) for i, d in enumerate(dtypes))
    fn = Function("main", f"CoreML{ios - 10}", (), tuple(n for n, _ in outs), [Operation(op, "out0", bindings, outs)])
    res = Interpreter(MILProgram({"main": fn})).run({})
    vals = [res[n] for n, _ in outs]
    return vals if len(vals) > 1 else vals[0]


def a(*v: Any, dtype: Any = F32) -> np.ndarray:
    return np.array(v, dtype=dtype)


# --------------------------------------------------------------------------- coverage of the claim table


def test_interpreter_implements_every_mil_op_the_claim_table_needs() -> None:
    needed = set(rules.PASS_PRODUCED_MIL)
    for ops in rules.ATEN_TO_MIL.values():
        needed |= set(ops)
    assert needed - implemented_ops() == set()


# --------------------------------------------------------------------------- element-wise binary


def test_binary_broadcast_and_types() -> None:
    x, y = a([1, 2, 3], [4, 5, 6]), a(10, 20, 30)
    np.testing.assert_array_equal(run("add", x=x, y=y), [[11, 22, 33], [14, 25, 36]])
    np.testing.assert_array_equal(run("sub", x=x, y=y), [[-9, -18, -27], [-6, -15, -24]])
    np.testing.assert_array_equal(run("mul", x=x, y=a(2)), [[2, 4, 6], [8, 10, 12]])
    np.testing.assert_array_equal(run("maximum", x=a(1, 5), y=a(3, 2)), [3, 5])
    np.testing.assert_array_equal(run("minimum", x=a(1, 5), y=a(3, 2)), [1, 2])
    np.testing.assert_allclose(run("pow", x=a(2, 9), y=a(3, 0.5)), [8, 3])


def test_divisions() -> None:
    np.testing.assert_allclose(run("real_div", x=a(1, -3), y=a(4, 2)), [0.25, -1.5])
    # floor_div rounds toward negative infinity, for floats and ints
    np.testing.assert_array_equal(run("floor_div", x=a(7, -7, 7.5), y=a(2, 2, -2)), [3, -4, -4])
    np.testing.assert_array_equal(run("floor_div", out=I32, x=a(7, -7, dtype=I32), y=a(2, 2, dtype=I32)), [3, -4])
    # mod follows the divisor's sign, like Python's %
    np.testing.assert_array_equal(run("mod", x=a(7, -7, 7), y=a(3, 3, -3)), [1, 2, -2])
    with pytest.raises(MILError, match="by zero"):
        run("floor_div", out=I32, x=a(1, dtype=I32), y=a(0, dtype=I32))


def test_comparisons_and_logic() -> None:
    x, y = a(1, 2, 3), a(2, 2, 2)
    assert run("equal", out=B, x=x, y=y).tolist() == [False, True, False]
    assert run("not_equal", out=B, x=x, y=y).tolist() == [True, False, True]
    assert run("less", out=B, x=x, y=y).tolist() == [True, False, False]
    assert run("less_equal", out=B, x=x, y=y).tolist() == [True, True, False]
    assert run("greater", out=B, x=x, y=y).tolist() == [False, False, True]
    assert run("greater_equal", out=B, x=x, y=y).tolist() == [False, True, True]
    p, q = np.array([True, True, False, False]), np.array([True, False, True, False])
    assert run("logical_and", out=B, x=p, y=q).tolist() == [True, False, False, False]
    assert run("logical_or", out=B, x=p, y=q).tolist() == [True, True, True, False]
    assert run("logical_xor", out=B, x=p, y=q).tolist() == [False, True, True, False]
    assert run("logical_not", out=B, x=p).tolist() == [False, False, True, True]
    np.testing.assert_array_equal(run("select", cond=np.array([True, False]), a=a(1, 2), b=a(9)), [1, 9])


# --------------------------------------------------------------------------- element-wise unary


def test_unary_math() -> None:
    np.testing.assert_allclose(run("abs", x=a(-2, 3)), [2, 3])
    np.testing.assert_allclose(run("exp", x=a(0, 1)), [1, math.e], rtol=1e-6)
    np.testing.assert_allclose(run("exp2", x=a(3, -1)), [8, 0.5])
    np.testing.assert_allclose(run("sqrt", x=a(4, 2)), [2, math.sqrt(2)], rtol=1e-6)
    np.testing.assert_allclose(run("square", x=a(-3)), [9])
    np.testing.assert_allclose(run("erf", x=a(0, 1, -2)), [0, 0.8427007929, -0.9953222650], rtol=1e-6)
    np.testing.assert_allclose(run("sin", x=a(math.pi / 2)), [1], rtol=1e-6)
    np.testing.assert_allclose(run("cos", x=a(0)), [1])
    np.testing.assert_allclose(run("tan", x=a(math.pi / 4)), [1], rtol=1e-6)
    np.testing.assert_allclose(run("asin", x=a(1)), [math.pi / 2], rtol=1e-6)
    np.testing.assert_allclose(run("acos", x=a(1)), [0], atol=1e-7)
    np.testing.assert_allclose(run("atan", x=a(1)), [math.pi / 4], rtol=1e-6)
    np.testing.assert_allclose(run("sinh", x=a(1)), [math.sinh(1)], rtol=1e-6)
    np.testing.assert_allclose(run("cosh", x=a(1)), [math.cosh(1)], rtol=1e-6)
    np.testing.assert_allclose(run("tanh", x=a(1)), [math.tanh(1)], rtol=1e-6)
    np.testing.assert_allclose(run("atanh", x=a(0.5)), [math.atanh(0.5)], rtol=1e-6)
    np.testing.assert_array_equal(run("sign", x=a(-2, 0, 3)), [-1, 0, 1])
    np.testing.assert_array_equal(run("floor", x=a(-1.5, 1.5)), [-2, 1])
    np.testing.assert_array_equal(run("ceil", x=a(-1.5, 1.5)), [-1, 2])
    # round: nearest, ties to even (as numpy's value_inference in the op definition)
    np.testing.assert_array_equal(run("round", x=a(0.5, 1.5, 2.5, -0.5, 2.6)), [0, 2, 2, -0, 3])


def test_epsilon_quirks_of_inverse_log_rsqrt() -> None:
    # inverse: y = 1 / (x + epsilon), epsilon defaults to 1e-4
    np.testing.assert_allclose(run("inverse", x=a(1.0)), [1 / 1.0001], rtol=1e-7)
    np.testing.assert_allclose(run("inverse", x=a(0.0), epsilon=a(0.0)), [np.inf])
    # log: y = log(x + epsilon), epsilon 1e-45 by default; in an fp16 program the epsilon rounds to 0
    assert run("log", x=a(0.0))[0] == pytest.approx(math.log(1.401298464324817e-45), rel=1e-6)
    assert run("log", out=F16, x=np.array([0.0], dtype=F16))[0] == -np.inf
    np.testing.assert_allclose(run("log", x=a(0.0), epsilon=a(1.0)), [0.0])
    # rsqrt: y = 1 / sqrt(x + epsilon), epsilon 1e-12
    np.testing.assert_allclose(run("rsqrt", x=a(0.0)), [1e6], rtol=1e-5)
    np.testing.assert_allclose(run("rsqrt", x=a(4.0)), [0.5], rtol=1e-6)


def test_cast() -> None:
    # float -> int rounds toward zero
    np.testing.assert_array_equal(run("cast", out=I32, x=a(-1.7, 1.7, 2.0), dtype="int32"), [-1, 1, 2])
    assert run("cast", out=B, x=a(0, 0.5), dtype="bool").tolist() == [False, True]
    h = run("cast", out=F16, x=a(1 + 2 ** -12, 65504.0), dtype="fp16")
    assert h.dtype == np.float16 and h.tolist() == [1.0, 65504.0]
    with pytest.raises(MILError, match="cast to 'complex64'"):
        run("cast", x=a(1), dtype="complex64")


def test_fp16_program_rounds_every_op_result() -> None:
    x = np.array([1.0], dtype=F16)
    y = np.array([2 ** -11], dtype=F16)  # half an fp16 ulp at 1.0: the fp16 sum rounds to even, back to 1.0
    r = run("add", out=F16, x=x, y=y)
    assert r.dtype == np.float16 and r[0] == 1.0
    assert run("add", out=F32, x=x.astype(F32), y=y.astype(F32))[0] == 1 + 2 ** -11
    # a dot product accumulates wide and rounds once: 2048 ones in fp16 sum to exactly 2048
    ones = np.ones((1, 2048), dtype=F16)
    assert run("matmul", out=F16, x=ones, y=ones.T)[0, 0] == 2048


# --------------------------------------------------------------------------- activations


def test_activations() -> None:
    x = a(-2, -0.5, 0, 0.5, 7)
    np.testing.assert_allclose(run("relu", x=x), [0, 0, 0, 0.5, 7])
    np.testing.assert_allclose(run("relu6", x=x), [0, 0, 0, 0.5, 6])
    np.testing.assert_allclose(run("sigmoid", x=a(0, 2)), [0.5, 1 / (1 + math.exp(-2))], rtol=1e-6)
    np.testing.assert_allclose(run("silu", x=a(2)), [2 / (1 + math.exp(-2))], rtol=1e-6)
    np.testing.assert_allclose(run("leaky_relu", x=x, alpha=a(0.1)), [-0.2, -0.05, 0, 0.5, 7], rtol=1e-6)
    np.testing.assert_allclose(run("elu", x=a(-1, 2), alpha=a(2.0)), [2 * (math.exp(-1) - 1), 2], rtol=1e-6)
    np.testing.assert_allclose(run("clamped_relu", x=x, alpha=a(0.5), beta=a(1.0)), [-1, -0.25, 0, 0.5, 1])
    np.testing.assert_allclose(run("clip", x=x, alpha=a(-1.0), beta=a(1.0)), [-1, -0.5, 0, 0.5, 1])
    np.testing.assert_allclose(run("threshold", x=x, alpha=a(0.25)), [0.25, 0.25, 0.25, 0.5, 7])
    np.testing.assert_allclose(run("sigmoid_hard", x=a(0, 10), alpha=a(0.2), beta=a(0.5)), [0.5, 1])
    np.testing.assert_allclose(run("softplus", x=a(0, 30)), [math.log(2), 30], rtol=1e-6)
    np.testing.assert_allclose(run("softsign", x=a(1, -3)), [0.5, -0.75])
    # prelu: one alpha per channel (axis 1)
    xp = np.array([[[-1.0, 1.0]], [[-2.0, 2.0]]], dtype=F32).reshape(1, 2, 2)
    np.testing.assert_allclose(run("prelu", x=xp, alpha=a(0.1, 0.5)), [[[-0.1, 1], [-1, 2]]])


def test_gelu_modes() -> None:
    x = a(1.0, -0.5)
    exact = [0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in (1.0, -0.5)]
    tanh = [0.5 * v * (1 + math.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v ** 3))) for v in (1.0, -0.5)]
    sig = [v / (1 + math.exp(-1.702 * v)) for v in (1.0, -0.5)]
    np.testing.assert_allclose(run("gelu", x=x), exact, rtol=1e-6)
    np.testing.assert_allclose(run("gelu", x=x, mode="EXACT"), exact, rtol=1e-6)
    np.testing.assert_allclose(run("gelu", x=x, mode="TANH_APPROXIMATION"), tanh, rtol=1e-6)
    np.testing.assert_allclose(run("gelu", x=x, mode="SIGMOID_APPROXIMATION"), sig, rtol=1e-6)


def test_softmax() -> None:
    x = a([1, 2, 3], [1, 1, 1])
    e = np.exp([1, 2, 3]) / np.exp([1, 2, 3]).sum()
    np.testing.assert_allclose(run("softmax", x=x, axis=a(-1, dtype=I32)), [e, [1 / 3] * 3], rtol=1e-6)
    np.testing.assert_allclose(run("softmax", x=x, axis=a(0, dtype=I32))[:, 0], [0.5, 0.5])
    # large inputs do not overflow
    np.testing.assert_allclose(run("softmax", x=a(1000, 1000)), [0.5, 0.5])


# --------------------------------------------------------------------------- linear algebra


def test_matmul_and_linear() -> None:
    x, y = a([1, 2], [3, 4]), a([5, 6], [7, 8])
    np.testing.assert_allclose(run("matmul", x=x, y=y), [[19, 22], [43, 50]])
    np.testing.assert_allclose(run("matmul", x=x, y=y, transpose_x=np.array(True)), [[26, 30], [38, 44]])
    np.testing.assert_allclose(run("matmul", x=x, y=y, transpose_y=np.array(True)), [[17, 23], [39, 53]])
    # batched with broadcasting
    xb = np.stack([x, 2 * x])
    np.testing.assert_allclose(run("matmul", x=xb, y=y)[1], [[38, 44], [86, 100]])
    # linear: x @ W.T + b, W is [out, in]
    np.testing.assert_allclose(run("linear", x=a([1, 2]), weight=a([1, 0], [1, 1], [0, 2]), bias=a(1, 1, 1)),
                               [[2, 4, 5]])


def _conv_reference(x: np.ndarray, w: np.ndarray, stride: int, pad: tuple[int, int], dil: int,
                    groups: int) -> np.ndarray:
    """Naive 1D grouped convolution by loops, straight from the definition."""
    n, c, length = x.shape
    o, cg, k = w.shape
    xp = np.pad(x, [(0, 0), (0, 0), pad])
    out_len = (xp.shape[2] - (k - 1) * dil - 1) // stride + 1
    out = np.zeros((n, o, out_len))
    og = o // groups
    for b in range(n):
        for oc in range(o):
            g = oc // og
            for t in range(out_len):
                s = 0.0
                for ic in range(cg):
                    for kk in range(k):
                        s += xp[b, g * cg + ic, t * stride + kk * dil] * w[oc, ic, kk]
                out[b, oc, t] = s
    return out


def test_conv_1d_hand_computed() -> None:
    x = a([[1, 2, 3, 4]])
    w = a([[1, 0, -1]])
    np.testing.assert_allclose(run("conv", x=x, weight=w, pad_type="valid"), [[[-2, -2]]])
    np.testing.assert_allclose(run("conv", x=x, weight=w, pad_type="custom", pad=a(1, 1, dtype=I32)),
                               [[[-2, -2, -2, 3]]])
    np.testing.assert_allclose(run("conv", x=x, weight=w, pad_type="valid", bias=a(10)), [[[8, 8]]])


def test_conv_against_loop_reference() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 11)).astype(F32)
    w = rng.standard_normal((6, 2, 3)).astype(F32)
    got = run("conv", x=x, weight=w, strides=a(2, dtype=I32), dilations=a(2, dtype=I32), groups=a(2, dtype=I32),
              pad_type="custom", pad=a(1, 2, dtype=I32))
    np.testing.assert_allclose(got, _conv_reference(x, w, 2, (1, 2), 2, 2), rtol=1e-5, atol=1e-5)


def test_conv_same_padding_and_2d() -> None:
    # "same": output = ceil(in / stride); for in 5, k 3, s 2 the total pad is 2, split evenly
    x = np.arange(25, dtype=F32).reshape(1, 1, 5, 5)
    w = np.ones((1, 1, 3, 3), dtype=F32)
    got = run("conv", x=x, weight=w, strides=a(2, 2, dtype=I32), pad_type="same")
    assert got.shape == (1, 1, 3, 3)
    assert got[0, 0, 0, 0] == 0 + 1 + 5 + 6  # the window at the corner covers 2x2 real pixels
    assert got[0, 0, 1, 1] == sum(x[0, 0, 1:4, 1:4].ravel())


def test_conv_transpose_hand_computed() -> None:
    x = a([[1, 2]])
    w = a([[1, 1, 1]])  # [C_in, C_out, K]
    np.testing.assert_allclose(run("conv_transpose", x=x, weight=w, strides=a(2, dtype=I32)), [[[1, 1, 3, 2, 2]]])
    np.testing.assert_allclose(run("conv_transpose", x=x, weight=w, strides=a(2, dtype=I32), pad_type="custom",
                                   pad=a(1, 1, dtype=I32)), [[[1, 3, 2]]])
    # output_shape larger than the computed size pads at the end (torch output_padding)
    np.testing.assert_allclose(run("conv_transpose", x=x, weight=w, strides=a(2, dtype=I32), pad_type="custom",
                                   pad=a(1, 1, dtype=I32), output_shape=a(1, 1, 4, dtype=I32)), [[[1, 3, 2, 2]]])


def test_crop() -> None:
    x = np.arange(16, dtype=F32).reshape(1, 1, 4, 4)
    got = run("crop", x=x, crop_height=a(1, 0, dtype=I32), crop_width=a(0, 2, dtype=I32))
    np.testing.assert_array_equal(got[0, 0], [[4, 5], [8, 9], [12, 13]])


# --------------------------------------------------------------------------- pooling


def test_max_and_avg_pool() -> None:
    x = a([[[1, 2, 3, 4, 5]]]).reshape(1, 1, 5)
    k, s = a(2, dtype=I32), a(2, dtype=I32)
    np.testing.assert_allclose(run("max_pool", x=x, kernel_sizes=k, strides=s, pad_type="valid"), [[[2, 4]]])
    np.testing.assert_allclose(run("avg_pool", x=x, kernel_sizes=k, strides=s, pad_type="valid"), [[[1.5, 3.5]]])
    # ceil_mode keeps the last partial window; the average divides by the elements inside
    np.testing.assert_allclose(run("max_pool", x=x, kernel_sizes=k, strides=s, pad_type="valid",
                                   ceil_mode=np.array(True)), [[[2, 4, 5]]])
    np.testing.assert_allclose(run("avg_pool", x=x, kernel_sizes=k, strides=s, pad_type="valid",
                                   ceil_mode=np.array(True)), [[[1.5, 3.5, 5]]])
    # explicit padding: counted in the average unless exclude_padding_from_average
    pad = a(1, 1, dtype=I32)
    k3 = a(3, dtype=I32)
    inc = run("avg_pool", x=x, kernel_sizes=k3, strides=s, pad_type="custom", pad=pad)
    exc = run("avg_pool", x=x, kernel_sizes=k3, strides=s, pad_type="custom", pad=pad,
              exclude_padding_from_average=np.array(True))
    np.testing.assert_allclose(inc, [[[1, 3, 3]]], rtol=1e-6)  # windows (pad,1,2) (2,3,4) (4,5,pad)
    np.testing.assert_allclose(exc, [[[1.5, 3, 4.5]]], rtol=1e-6)
    np.testing.assert_allclose(run("max_pool", x=-x, kernel_sizes=k3, strides=s, pad_type="custom", pad=pad),
                               [[[-1, -2, -4]]])  # padding never wins a max


def test_pool_2d() -> None:
    x = np.arange(16, dtype=F32).reshape(1, 1, 4, 4)
    got = run("max_pool", x=x, kernel_sizes=a(2, 2, dtype=I32), strides=a(2, 2, dtype=I32), pad_type="valid")
    np.testing.assert_array_equal(got[0, 0], [[5, 7], [13, 15]])


# --------------------------------------------------------------------------- normalization


def test_batch_instance_layer_norm() -> None:
    x = np.array([[[1.0, 3.0], [2.0, 6.0]]], dtype=F32)  # [N=1, C=2, 2]
    got = run("batch_norm", x=x, mean=a(2, 4), variance=a(1, 4), gamma=a(1, 2), beta=a(0, 1), epsilon=a(0.0))
    np.testing.assert_allclose(got, [[[-1, 1], [-1, 3]]], rtol=1e-6)
    got = run("instance_norm", x=x, epsilon=a(0.0))
    np.testing.assert_allclose(got, [[[-1, 1], [-1, 1]]], rtol=1e-6)
    got = run("layer_norm", x=x, axes=a(-1, dtype=I32), gamma=a(2, 3), beta=a(0, 1), epsilon=a(0.0))
    np.testing.assert_allclose(got, [[[-2, 4], [-2, 4]]], rtol=1e-6)
    # the epsilon is added to the variance
    got = run("layer_norm", x=a(0, 2), epsilon=a(1.0))
    np.testing.assert_allclose(got, [-1 / math.sqrt(2), 1 / math.sqrt(2)], rtol=1e-6)


# --------------------------------------------------------------------------- reductions


def test_reductions() -> None:
    x = a([1, 5, 3], [4, 2, 6])
    ax1 = a(1, dtype=I32)
    np.testing.assert_allclose(run("reduce_sum", x=x, axes=ax1), [9, 12])
    np.testing.assert_allclose(run("reduce_mean", x=x, axes=ax1, keep_dims=np.array(True)), [[3], [4]])
    np.testing.assert_allclose(run("reduce_max", x=x), 6)
    np.testing.assert_allclose(run("reduce_min", x=x, axes=a(0, dtype=I32)), [1, 2, 3])
    np.testing.assert_allclose(run("reduce_prod", x=x, axes=ax1), [15, 48])
    np.testing.assert_allclose(run("reduce_l2_norm", x=a(3, 4)), 5)
    np.testing.assert_allclose(run("reduce_l1_norm", x=a(-3, 4)), 7)
    np.testing.assert_allclose(run("reduce_sum_square", x=a(3, 4)), 25)
    np.testing.assert_allclose(run("reduce_log_sum_exp", x=a(1000, 1000)), 1000 + math.log(2))
    # ties go to the first index
    assert run("reduce_argmax", out=I32, x=a(1, 7, 7), axis=a(0, dtype=I32)).tolist() == 1
    assert run("reduce_argmin", out=I32, x=a([3, 1, 1]), axis=a(-1, dtype=I32),
               keep_dims=np.array(True)).tolist() == [[1]]


def test_cumsum() -> None:
    x = a(1, 2, 3)
    np.testing.assert_allclose(run("cumsum", x=x, axis=a(0, dtype=I32)), [1, 3, 6])
    np.testing.assert_allclose(run("cumsum", x=x, axis=a(0, dtype=I32), exclusive=np.array(True)), [0, 1, 3])
    np.testing.assert_allclose(run("cumsum", x=x, axis=a(0, dtype=I32), reverse=np.array(True)), [6, 5, 3])


# --------------------------------------------------------------------------- layout


def test_layout_ops() -> None:
    x = np.arange(6, dtype=F32).reshape(2, 3)
    assert run("reshape", x=x, shape=a(3, -1, dtype=I32)).shape == (3, 2)
    assert run("reshape", x=x, shape=a(0, 3, dtype=I32), ios=16).shape == (2, 3)
    np.testing.assert_array_equal(run("transpose", x=x, perm=a(1, 0, dtype=I32)), x.T)
    assert run("expand_dims", x=x, axes=a(0, -1, dtype=I32)).shape == (1, 2, 3, 1)
    assert run("squeeze", x=x.reshape(1, 2, 1, 3)).shape == (2, 3)
    assert run("squeeze", x=x.reshape(1, 2, 1, 3), axes=a(2, dtype=I32)).shape == (1, 2, 3)
    np.testing.assert_array_equal(run("tile", x=a(1, 2), reps=a(3, dtype=I32)), [1, 2, 1, 2, 1, 2])
    np.testing.assert_array_equal(run("reverse", x=x, axes=a(1, dtype=I32)), x[:, ::-1])
    np.testing.assert_array_equal(run("concat", values=[a(1, 2), a(3)], axis=a(0, dtype=I32)), [1, 2, 3])
    np.testing.assert_array_equal(run("concat", values=[a(1, 2), a(3, 4)], axis=a(0, dtype=I32),
                                      interleave=np.array(True)), [1, 3, 2, 4])
    np.testing.assert_array_equal(run("stack", values=[a(1, 2), a(3, 4)], axis=a(1, dtype=I32)), [[1, 3], [2, 4]])
    parts = run("split", n_out=2, x=np.arange(5, dtype=F32), split_sizes=a(2, 3, dtype=I32), axis=a(0, dtype=I32))
    assert [p.tolist() for p in parts] == [[0, 1], [2, 3, 4]]
    parts = run("split", n_out=2, x=np.arange(4, dtype=F32), num_splits=a(2, dtype=I32), axis=a(0, dtype=I32))
    assert [p.tolist() for p in parts] == [[0, 1], [2, 3]]


def test_slicing() -> None:
    x = np.arange(12, dtype=F32).reshape(3, 4)
    got = run("slice_by_index", x=x, begin=a(1, 0, dtype=I32), end=a(3, -1, dtype=I32), stride=a(1, 2, dtype=I32))
    np.testing.assert_array_equal(got, x[1:3, 0:-1:2])
    got = run("slice_by_index", x=x, begin=a(2, 1, dtype=I32), end=a(0, 0, dtype=I32),
              begin_mask=np.array([True, False]), end_mask=np.array([False, True]),
              squeeze_mask=np.array([False, False]))
    np.testing.assert_array_equal(got, x[:0, 1:])
    got = run("slice_by_index", x=x, begin=a(1, 0, dtype=I32), end=a(2, 4, dtype=I32),
              squeeze_mask=np.array([True, False]))
    np.testing.assert_array_equal(got, x[1])
    np.testing.assert_array_equal(run("slice_by_size", x=x, begin=a(1, 1, dtype=I32), size=a(-1, 2, dtype=I32)),
                                  x[1:, 1:3])
    got = run("slice_update", x=x, update=np.zeros((3, 2), F32), begin=a(0, 1, dtype=I32), end=a(3, 3, dtype=I32))
    assert got[:, 1:3].sum() == 0 and got[:, 0].tolist() == [0, 4, 8]


def test_pad_modes() -> None:
    x = a(1, 2, 3)
    np.testing.assert_array_equal(run("pad", x=x, pad=a(2, 1, dtype=I32), constant_val=a(9.0)), [9, 9, 1, 2, 3, 9])
    np.testing.assert_array_equal(run("pad", x=x, pad=a(2, 1, dtype=I32), mode="reflect"), [3, 2, 1, 2, 3, 2])
    np.testing.assert_array_equal(run("pad", x=x, pad=a(2, 1, dtype=I32), mode="replicate"), [1, 1, 1, 2, 3, 3])
    # the pad list covers the last dims only
    assert run("pad", x=np.zeros((2, 3), F32), pad=a(1, 1, dtype=I32)).shape == (2, 5)


def test_band_part_fill_range_shape() -> None:
    x = np.ones((3, 3), dtype=F32)
    np.testing.assert_array_equal(run("band_part", x=x, lower=a(0, dtype=I32), upper=a(-1, dtype=I32)),
                                  np.triu(x))
    np.testing.assert_array_equal(run("band_part", x=x, lower=a(1, dtype=I32), upper=a(0, dtype=I32)),
                                  np.tril(x) - np.tril(x, -2))
    np.testing.assert_array_equal(run("fill", shape=a(2, 2, dtype=I32), value=a(1.5)), [[1.5, 1.5], [1.5, 1.5]])
    np.testing.assert_array_equal(run("fill_like", ref_tensor=np.zeros(3, I32), value=a(2.0)), [2, 2, 2])
    np.testing.assert_array_equal(run("range_1d", out=I32, start=a(1, dtype=I32), end=a(7, dtype=I32),
                                      step=a(2, dtype=I32)), [1, 3, 5])
    np.testing.assert_array_equal(run("shape", out=I32, x=np.zeros((2, 5), F32)), [2, 5])
    np.testing.assert_array_equal(run("identity", x=a(4)), [4])


def test_pixel_shuffle_family() -> None:
    # 4 channels of 1x1 become one 2x2 channel, channel c -> position (c // 2, c % 2)
    x = np.arange(4, dtype=F32).reshape(1, 4, 1, 1)
    y = run("pixel_shuffle", x=x, upscale_factor=a(2, dtype=I32))
    np.testing.assert_array_equal(y, [[[[0, 1], [2, 3]]]])
    np.testing.assert_array_equal(run("pixel_unshuffle", x=y, downscale_factor=a(2, dtype=I32)), x)
    # space_to_depth orders blocks before channels (TF semantics)
    x2 = np.arange(8, dtype=F32).reshape(1, 2, 2, 2)
    d = run("space_to_depth", x=x2, block_size=a(2, dtype=I32))
    np.testing.assert_array_equal(d[0, :, 0, 0], [0, 4, 1, 5, 2, 6, 3, 7])
    np.testing.assert_array_equal(run("depth_to_space", x=d, block_size=a(2, dtype=I32)), x2)


# --------------------------------------------------------------------------- gather / scatter


def test_gather_family() -> None:
    x = np.arange(12, dtype=F32).reshape(3, 4)
    np.testing.assert_array_equal(run("gather", x=x, indices=a(2, 0, dtype=I32), axis=a(0, dtype=I32)), x[[2, 0]])
    np.testing.assert_array_equal(run("gather", x=x, indices=a([1], [3], dtype=I32), axis=a(1, dtype=I32)),
                                  x[:, [[1], [3]]])
    # before iOS17 negative indices count from the end; from iOS17 on they are out of bounds
    np.testing.assert_array_equal(run("gather", ios=16, x=x, indices=a(-1, dtype=I32), axis=a(0, dtype=I32)), x[[2]])
    with pytest.raises(MILError, match="out of bounds"):
        run("gather", ios=17, x=x, indices=a(-1, dtype=I32), axis=a(0, dtype=I32))
    with pytest.raises(MILError, match="out of bounds"):
        run("gather", x=x, indices=a(3, dtype=I32), axis=a(0, dtype=I32))
    idx = a([0, 3], [1, 1], [2, 0], dtype=I32)
    np.testing.assert_array_equal(run("gather_along_axis", x=x, indices=idx, axis=a(1, dtype=I32)),
                                  np.take_along_axis(x, idx, 1))
    np.testing.assert_array_equal(run("gather_nd", x=x, indices=a([0, 1], [2, 3], dtype=I32)), [1, 11])
    np.testing.assert_array_equal(run("gather_nd", x=x, indices=a([1], dtype=I32)), [x[1]])


def test_scatter_family() -> None:
    data = np.zeros((3, 2), dtype=F32)
    upd = a([1, 2], [3, 4])
    got = run("scatter", data=data, indices=a(2, 0, dtype=I32), updates=upd, axis=a(0, dtype=I32), mode="update")
    np.testing.assert_array_equal(got, [[3, 4], [0, 0], [1, 2]])
    # add mode accumulates repeated indices
    got = run("scatter", data=data, indices=a(1, 1, dtype=I32), updates=upd, axis=a(0, dtype=I32), mode="add")
    np.testing.assert_array_equal(got, [[0, 0], [4, 6], [0, 0]])
    got = run("scatter_along_axis", data=np.zeros((2, 3), F32), indices=a([2], [0], dtype=I32), updates=a([5], [6]),
              axis=a(1, dtype=I32), mode="update")
    np.testing.assert_array_equal(got, [[0, 0, 5], [6, 0, 0]])
    got = run("scatter_nd", data=np.zeros((2, 2), F32), indices=a([0, 1], [1, 0], dtype=I32), updates=a(7, 8),
              mode="update")
    np.testing.assert_array_equal(got, [[0, 7], [8, 0]])
    np.testing.assert_array_equal(run("one_hot", indices=a(0, 2, dtype=I32), one_hot_vector_size=a(3, dtype=I32)),
                                  [[1, 0, 0], [0, 0, 1]])


def test_topk_and_argsort() -> None:
    x = a([3, 1, 4, 1, 5])
    vals, idx = run("topk", out=[F32, I32], x=x, k=a(2, dtype=I32))
    assert vals.tolist() == [[5, 4]] and idx.tolist() == [[4, 2]]
    vals, idx = run("topk", out=[F32, I32], x=x, k=a(3, dtype=I32), ascending=np.array(True))
    assert vals.tolist() == [[1, 1, 3]] and idx.tolist() == [[1, 3, 0]]  # ties keep input order
    assert run("argsort", out=I32, x=x).tolist() == [[4, 2, 0, 1, 3]]
    assert run("argsort", out=I32, x=x, ascending=np.array(True)).tolist() == [[1, 3, 0, 2, 4]]


# --------------------------------------------------------------------------- resampling


def test_upsample_bilinear_grid_rules() -> None:
    x = np.array([0.0, 1.0], dtype=F32).reshape(1, 1, 1, 2)
    sw = a(2.0)
    # align_corners=False samples at (i + 0.5) * in/out - 0.5, clamped
    got = run("upsample_bilinear", x=x, scale_factor_height=a(1.0), scale_factor_width=sw,
              align_corners=np.array(False))
    np.testing.assert_allclose(got[0, 0, 0], [0, 0.25, 0.75, 1])
    # align_corners=True spaces (in - 1) / (out - 1)
    got = run("upsample_bilinear", x=x, scale_factor_height=a(1.0), scale_factor_width=sw,
              align_corners=np.array(True))
    np.testing.assert_allclose(got[0, 0, 0], [0, 1 / 3, 2 / 3, 1], rtol=1e-6)
    got = run("resize_bilinear", x=x, target_size_height=a(1, dtype=I32), target_size_width=a(3, dtype=I32),
              sampling_mode="ALIGN_CORNERS")
    np.testing.assert_allclose(got[0, 0, 0], [0, 0.5, 1])


def test_upsample_nearest() -> None:
    x = np.arange(4, dtype=F32).reshape(1, 1, 2, 2)
    got = run("upsample_nearest_neighbor", x=x, scale_factor_height=a(2.0), scale_factor_width=a(1.5))
    np.testing.assert_array_equal(got[0, 0], [[0, 0, 1], [0, 0, 1], [2, 2, 3], [2, 2, 3]])
    got = run("resize_nearest_neighbor", x=x, target_size_height=a(1, dtype=I32), target_size_width=a(4, dtype=I32))
    np.testing.assert_array_equal(got[0, 0], [[0, 0, 1, 1]])


def test_scaled_dot_product_attention() -> None:
    rng = np.random.default_rng(1)
    q, k, v = (rng.standard_normal((1, 2, 3, 4)).astype(F32) for _ in range(3))
    s = q @ k.transpose(0, 1, 3, 2) / 2.0
    p = np.exp(s - s.max(-1, keepdims=True))
    ref = (p / p.sum(-1, keepdims=True)) @ v
    np.testing.assert_allclose(run("scaled_dot_product_attention", query=q, key=k, value=v), ref, rtol=1e-5)
    mask = np.tril(np.ones((3, 3), dtype=bool))
    got = run("scaled_dot_product_attention", query=q, key=k, value=v, attn_mask=mask)
    np.testing.assert_allclose(got[..., 0, :], v[..., 0, :], rtol=1e-5)  # the first query sees one key only


# --------------------------------------------------------------------------- the interpreter itself


def test_unsupported_ops_are_named() -> None:
    op = Operation("random_normal", "r", {}, (("r", TensorType(F32, (2,))),))
    with pytest.raises(UnsupportedMILOpError, match="random_normal"):
        Interpreter(MILProgram({"main": Function("main", "CoreML7", (), ("r",), [op])}))


def test_declared_shape_is_checked() -> None:
    op = Operation("add", "y", {"x": (Ref("x"),), "y": (np.ones(3, F32),)}, (("y", TensorType(F32, (4,))),))
    interp = Interpreter(MILProgram({"main": Function("main", "CoreML7", (("x", TensorType(F32, (3,))),), ("y",),
                                                      [op])}))
    with pytest.raises(MILError, match=r"op add 'y'.*shape \[3\].*declares \[4\]"):
        interp.run({"x": np.zeros(3, F32)})
    with pytest.raises(MILError, match="missing input 'x'"):
        interp.run({})


def test_inputs_are_converted_to_the_declared_dtype_and_not_mutated() -> None:
    ops = [Operation("scatter", "y", {"data": (Ref("x"),), "indices": (np.array([0], I32),),
                                      "updates": (np.array([5.0], F32),), "mode": ("update",)},
                     (("y", TensorType(F32, (2,))),))]
    interp = Interpreter(MILProgram({"main": Function("main", "CoreML7", (("x", TensorType(F32, (2,))),), ("y",),
                                                      ops)}))
    x = np.zeros(2, dtype=np.float64)
    assert interp.run({"x": x})["y"].tolist() == [5, 0]
    assert x.tolist() == [0, 0]


# --------------------------------------------------------------------------- real saved programs


@pytest.mark.slow
def test_ops_from_coremltools_passes_round_trip_through_a_saved_package(tmp_path: Any) -> None:
    """Ops that only graph passes create (fusions), built with coremltools' MIL builder, saved, read back, run."""
    from delegate_sdk_coreml._quiet import import_coremltools, quiet

    ct = import_coremltools()
    from coremltools.converters.mil import Builder as mb

    alpha = np.array([0.1, 0.2, 0.3, 0.4], dtype=F32)

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 4, 2, 2))], opset_version=ct.target.iOS17)
    def prog(x: Any) -> Any:
        return (mb.prelu(x=x, alpha=alpha, name="prelu"),
                mb.clamped_relu(x=x, alpha=0.5, beta=1.0, name="clamped"),
                mb.instance_norm(x=x, epsilon=1e-5, name="inorm"),
                mb.space_to_depth(x=x, block_size=2, name="s2d"),
                mb.slice_by_size(x=x, begin=[0, 1, 0, 0], size=[1, 2, -1, -1], name="sbs"),
                mb.stack(values=[x, x], axis=0, name="stacked"),
                mb.l2_norm(x=x, epsilon=1e-6, name="l2"))

    with quiet():
        model = ct.convert(prog, convert_to="mlprogram", compute_precision=ct.precision.FLOAT32,
                           minimum_deployment_target=ct.target.iOS17, skip_model_load=True)
        model.save(str(tmp_path / "m.mlpackage"))
    program = MILProgram.from_package(tmp_path / "m.mlpackage")
    interp = Interpreter(program)
    x = np.random.default_rng(2).standard_normal((1, 4, 2, 2)).astype(F32)
    got = interp.run({interp.inputs[0][0]: x})
    out = dict(zip(("prelu", "clamped", "inorm", "s2d", "sbs", "stacked", "l2"), (got[n] for n in interp.outputs)))
    np.testing.assert_allclose(out["prelu"], np.where(x >= 0, x, x * alpha.reshape(1, 4, 1, 1)), rtol=1e-6)
    np.testing.assert_allclose(out["clamped"], np.minimum(np.where(x >= 0, x, 0.5 * x), 1.0), rtol=1e-6)
    mean, var = x.mean((2, 3), keepdims=True), x.var((2, 3), keepdims=True)
    np.testing.assert_allclose(out["inorm"], (x - mean) / np.sqrt(var + 1e-5), rtol=1e-4, atol=1e-5)
    assert out["s2d"].shape == (1, 16, 1, 1) and out["s2d"][0, :, 0, 0].tolist() == \
        [x[0, c, i, j] for i in range(2) for j in range(2) for c in range(4)]
    np.testing.assert_array_equal(out["sbs"], x[:, 1:3])
    np.testing.assert_array_equal(out["stacked"], np.stack([x, x]))
    np.testing.assert_allclose(out["l2"], x / np.sqrt((x ** 2).sum()), rtol=1e-5)
