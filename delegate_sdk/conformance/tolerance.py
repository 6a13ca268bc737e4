"""THE tolerance policy of delegate-sdk conformance. Every number that decides PASS or FAIL lives here.

A delegate is compared with eager PyTorch (fp32, on CPU) on the same inputs. The policy depends on the
precision the plugin was lowered at and on the kind of case.

Every precision is a :class:`delegate_sdk.types.Precision` (the core vocabulary, or a plugin's own
declaration in ``BackendInfo.precision_specs``): the policy follows its kind, float dtype and bit widths,
never the spelling of its name; an unknown name is refused before anything is judged.

Float precisions (kind ``float``: ``fp32``, ``fp16``, ``bf16``, judged by the dtype they compute in)
---------------------------------------------------------------------------------------------------
Per output element, with ``e`` the eager value and ``d`` the delegate's::

    |d - e| <= atol + rtol * |e|
    rtol = RTOL[p] * cond * sqrt(K)        (K: reduction length = terms summed into one element)
    atol = rtol * rms(e) + tiny[p] * sqrt(K)

- ``RTOL`` is a few units of the precision's machine epsilon (fp32 1e-5 ~ 84 ULP: libm differences,
  fused multiply-add, vectorised transcendental approximations; fp16 2e-3 ~ 2 ULP of fp16 for the
  input and output roundings; bf16 1.6e-2 ~ 2 ULP of bf16).
- ``sqrt(K)`` is the growth of rounding error of a K-term sum in any order (random-walk bound), so
  reductions, matmuls and convolutions get a wider band the longer they accumulate.
- ``cond`` (>= 1, set per case) is the conditioning of ops that amplify input rounding (exp, pow, tan,
  erfinv, division): it multiplies the band at reduced precisions only (fp32 inputs are exact there).
- ``atol`` scales with the root-mean-square of the expected output, so a cancellation (a sum that
  is small compared to its terms) is judged relative to the magnitude of the data, not to the tiny
  result; ``tiny[p]`` (the smallest normal number) lets subnormals flush to zero.
- Non-finite values must match exactly: NaN where eager has NaN (and nowhere else), the same signed
  infinity where eager has one. At a reduced precision an eager value beyond the precision's largest
  finite number may come back as the same-signed infinity or as the largest finite number.
- Integer and boolean outputs must be equal.
- Reported metrics: ``max_abs_err`` (finite elements), ``max_ulp`` (error in units in the last place of
  the *precision's* dtype at the larger of |eager value| and rms(eager): the same magnitude the band is
  relative to, so a near-zero result of a cancellation does not read as millions of ULP), ``sqnr_db``.

Quantized precisions (kind ``quantized``: ``int8``, ``a16w8``, ``int16``, ``a8w4``, ``int4``, ...)
-----------------------------------------------------------------------------------------------
Errors are measured in output quantization steps (LSB) using the output scale the plugin reports
for the partition output (``CompiledDelegate.output_quant``). Edge-value samples are not run.

- With a reference (the plugin's ``reference_execute``: its quantized computation on a trusted CPU
  implementation, e.g. fake-quant), per element the delegate may be worse than the reference by at most
  ``QUANT_MAX_EXCESS_LSB`` (1) step: ``|d-e|/s <= |r-e|/s + 1``; and the mean signed difference
  ``mean(d-r)/s`` must stay within ``QUANT_MAX_BIAS_LSB`` (0.5): scattered rounding differences average
  out, a systematic offset (wrong zero point, off-by-one rounding) does not.
- Without a reference, for 8-bit (or narrower) outputs: ``max |d-e|/s <= QUANT_NOREF_LSB * cond *
  (1 + log2 K)`` (2 LSB for an elementwise op: output rounding plus the input quantization carried
  through the op; accumulation widens it); for wider outputs (a16w8, int16) the output step is far
  finer than the weights' and LSB counts say little, so the output must reach ``sqnr_floor(p)``.
- An output that is not a partition output (computed eagerly after the delegate) or has no reported
  scale is judged by ``sqnr_floor(p)``.
- Bool and integer outputs (comparisons, argmax, topk indices) of a partition with a reference must equal
  the *reference* exactly: quantization itself flips a comparison whose operands lie within a step of each
  other, and breaks ties, so eager PyTorch is the wrong yardstick there. Without a reference they must
  equal eager.
- Reported metrics: ``max_abs_err``, ``max_lsb`` (vs eager), ``sqnr_db``.

Model cases
-----------
Every float output must reach ``sqnr_floor(p)`` (signal = eager output, noise = delegate - eager),
non-finite values must agree as above, integer outputs must be equal. SQNR is reported capped at
+/-``SQNR_CAP_DB`` (999 means bit-exact).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from delegate_sdk.types import Precision, resolve_precision

#: relative tolerance per float dtype (before sqrt(K) and cond)
RTOL: dict[str, float] = {"float32": 1e-5, "float16": 2e-3, "bfloat16": 1.6e-2}
_TORCH_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16,
                                         "bfloat16": torch.bfloat16}
#: minimum SQNR (dB) for model cases at a float precision, by dtype
FLOAT_SQNR_MIN_DB: dict[str, float] = {"float32": 60.0, "float16": 30.0, "bfloat16": 20.0}
#: minimum SQNR (dB) for model cases, and for quantized outputs judged without LSB, by (activation, weight) bits;
#: other widths get 1.5 dB per bit of the narrower of the two
QUANT_SQNR_MIN_DB: dict[tuple[int, int], float] = {(16, 16): 25.0, (16, 8): 20.0, (8, 8): 12.0, (8, 4): 8.0,
                                                   (4, 4): 6.0}
QUANT_MAX_EXCESS_LSB = 1.0
_F32_EPS = float(torch.finfo(torch.float32).eps)
QUANT_MAX_BIAS_LSB = 0.5
QUANT_NOREF_LSB = 2.0
SQNR_CAP_DB = 999.0

PrecisionLike = Precision | str


def as_precision(precision: PrecisionLike) -> Precision:
    """A Precision; a bare name is looked up in the core vocabulary (ValueError if it is not there)."""
    return precision if isinstance(precision, Precision) else resolve_precision(precision)


def is_quantized(precision: PrecisionLike) -> bool:
    return as_precision(precision).quantized


def float_dtype(precision: PrecisionLike) -> torch.dtype:
    """The dtype a float precision is judged in (fp32 for a quantized one: its float parts are fp32)."""
    p = as_precision(precision)
    return _TORCH_DTYPES[p.dtype] if p.kind == "float" else torch.float32


def sqnr_floor(precision: PrecisionLike) -> float:
    """The SQNR (dB) a model output must reach at ``precision``."""
    p = as_precision(precision)
    if p.kind == "float":
        return FLOAT_SQNR_MIN_DB[p.dtype]
    bits = (p.activation_bits, p.weight_bits)
    return QUANT_SQNR_MIN_DB.get(bits, 1.5 * min(bits))


@dataclass
class Verdict:
    """The judgement of one sample: ok or not, why, the metrics and the tolerance applied."""

    ok: bool
    detail: str = ""
    metrics: dict[str, Any] = field(default_factory=lambda: {"max_abs_err": None, "sqnr_db": None})
    tolerance: dict[str, Any] = field(default_factory=dict)
    #: set when the verdict is not a mismatch but another outcome (e.g. FAIL_CONTRACT)
    outcome: str | None = None


# ----------------------------------------------------------------------------- metrics


def sqnr_db(expected: torch.Tensor, actual: torch.Tensor) -> float | None:
    e = expected.detach().double().reshape(-1)
    a = actual.detach().double().reshape(-1)
    m = torch.isfinite(e) & torch.isfinite(a)
    if e.numel() == 0 or not bool(m.any()):
        return None
    e, a = e[m], a[m]
    noise = float(((a - e) ** 2).sum())
    signal = float((e ** 2).sum())
    if noise == 0.0:
        return SQNR_CAP_DB
    if signal == 0.0:
        return -SQNR_CAP_DB
    return max(-SQNR_CAP_DB, min(SQNR_CAP_DB, 10.0 * math.log10(signal / noise)))


def ulp(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Spacing of ``dtype`` at |x| (float64 tensor); subnormal spacing near zero."""
    fi = torch.finfo(dtype)
    nmant = {torch.float32: 23, torch.float16: 10, torch.bfloat16: 7, torch.float64: 52}[dtype]
    min_exp = math.log2(fi.tiny)
    ax = x.double().abs()
    exp = torch.floor(torch.log2(torch.where(ax > 0, ax, torch.full_like(ax, fi.tiny))))
    exp = torch.clamp(exp, min=min_exp)
    return torch.pow(2.0, exp - nmant)


def _round(v: float | None, n: int = 6) -> float | None:
    if v is None or math.isnan(v):
        return None
    if math.isinf(v):
        return SQNR_CAP_DB if v > 0 else -SQNR_CAP_DB
    return float(f"{v:.{n}g}")


# ----------------------------------------------------------------------------- floats


def float_tolerance(precision: PrecisionLike, reduction: int = 1, cond: float = 1.0) -> dict[str, Any]:
    prec = as_precision(precision)
    dt = float_dtype(prec)
    p = str(dt).removeprefix("torch.")
    c = cond if dt != torch.float32 else 1.0
    rtol = RTOL[p] * c * math.sqrt(max(1, reduction))
    return {"kind": "float", "precision": prec.name, "judged_as": p, "rtol": _round(rtol),
            "atol": f"rtol*rms(expected) + {torch.finfo(dt).tiny:.3g}*sqrt(K)",
            "rtol_ulp": _round(rtol / torch.finfo(dt).eps, 4), "reduction_len": int(reduction),
            "cond": c, "nonfinite": "exact"}


def _compare_float(e: torch.Tensor, d: torch.Tensor, precision: PrecisionLike, reduction: int,
                   cond: float) -> tuple[int, str, dict[str, Any]]:
    """Returns (number of bad elements, description of the worst, metrics)."""
    dt = float_dtype(precision)
    p = str(dt).removeprefix("torch.")
    fi = torch.finfo(dt)
    c = cond if dt != torch.float32 else 1.0
    rtol = RTOL[p] * c * math.sqrt(max(1, reduction))
    e64, d64 = e.detach().double().reshape(-1), d.detach().double().reshape(-1)
    e_nan, d_nan = torch.isnan(e64), torch.isnan(d64)
    e_inf = torch.isinf(e64)
    e_fin, d_fin = torch.isfinite(e64), torch.isfinite(d64)
    # beyond the precision's range (reduced precisions only): same-signed infinity or saturation accepted
    beyond = e_fin & (e64.abs() > fi.max) if dt != torch.float32 else torch.zeros_like(e_fin)
    ok_beyond = beyond & (torch.sign(d64) == torch.sign(e64)) & (d64.abs() >= fi.max * (1 - fi.eps))
    normal = e_fin & ~beyond
    both = normal & d_fin
    ef = e64[e_fin]
    rms = float(ef.pow(2).mean().sqrt()) if ef.numel() else 0.0
    atol = rtol * rms + fi.tiny * math.sqrt(max(1, reduction))
    err = (d64 - e64).abs()
    allowed = atol + rtol * e64.abs()
    close = d_fin & (err <= allowed)
    bad = e_nan & ~d_nan                      # eager NaN must stay NaN
    bad |= e_inf & (d64 != e64)               # eager ±inf must be the same infinity
    bad |= normal & ~close                    # finite: within the band (NaN/inf from the delegate fail)
    bad |= beyond & ~(ok_beyond | close)
    fin_bad = both & ~close
    nbad = int(bad.sum())
    errs = err[both]
    max_abs = float(errs.max()) if errs.numel() else 0.0
    ulps = (errs / ulp(torch.clamp(e64[both].abs(), min=rms), dt)) if errs.numel() else errs
    metrics = {"max_abs_err": _round(max_abs), "max_ulp": _round(float(ulps.max()) if ulps.numel() else 0.0, 4),
               "sqnr_db": _round(sqnr_db(e64, d64), 4)}
    worst = ""
    if nbad:
        idx = int(torch.nonzero(bad)[0]) if not bool(fin_bad.any()) else int(
            torch.argmax(torch.where(fin_bad, err / allowed, torch.zeros_like(err))))
        pos = _unravel(idx, tuple(e.shape))
        band = f" (allowed |err| <= {float(allowed[idx]):.3g})" if math.isfinite(float(allowed[idx])) else ""
        worst = (f"{nbad}/{e64.numel()} elements out of tolerance; worst at {pos}: expected "
                 f"{float(e64[idx]):.6g}, got {float(d64[idx]):.6g}{band}")
    return nbad, worst, metrics


def _unravel(idx: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    out = []
    for s in reversed(shape):
        out.append(idx % s if s else 0)
        idx //= s if s else 1
    return tuple(reversed(out))


def _compare_exact(e: torch.Tensor, d: torch.Tensor, against: str = "expected") -> tuple[int, str]:
    bad = (e.reshape(-1) != d.reshape(-1))
    n = int(bad.sum())
    if not n:
        return 0, ""
    i = int(torch.nonzero(bad)[0])
    return n, (f"{n}/{e.numel()} elements differ; first at {_unravel(i, tuple(e.shape))}: {against} "
               f"{e.reshape(-1)[i].item()}, got {d.reshape(-1)[i].item()}")


# ----------------------------------------------------------------------------- quantized


def quant_tolerance(precision: PrecisionLike, reduction: int, cond: float, scale: float | None, bits: int,
                    has_reference: bool) -> dict[str, Any]:
    prec = as_precision(precision)
    t: dict[str, Any] = {"kind": "quant", "precision": prec.name, "scale": _round(scale), "bits": bits,
                         "reduction_len": int(reduction), "reference": has_reference}
    if scale is None:
        t.update(kind="sqnr", min_sqnr_db=sqnr_floor(prec),
                 note="no output scale for this output: judged by SQNR")
    elif has_reference:
        t.update(max_excess_lsb=QUANT_MAX_EXCESS_LSB, max_bias_lsb=QUANT_MAX_BIAS_LSB)
    elif bits <= 8:
        t.update(max_lsb=_round(QUANT_NOREF_LSB * cond * (1 + math.log2(max(1, reduction))), 4))
    else:
        t.update(kind="sqnr", min_sqnr_db=sqnr_floor(prec),
                 note=f"{bits}-bit output without a reference: judged by SQNR")
    return t


def _compare_quant(e: torch.Tensor, d: torch.Tensor, r: torch.Tensor | None, scale: float | None,
                   tol: dict[str, Any]) -> tuple[bool, str, dict[str, Any]]:
    e64, d64 = e.detach().double().reshape(-1), d.detach().double().reshape(-1)
    fin = torch.isfinite(e64)
    metrics: dict[str, Any] = {"max_abs_err": None, "max_lsb": None, "sqnr_db": _round(sqnr_db(e64, d64), 4)}
    if not bool(fin.any()):
        return True, "", metrics
    e64, d64 = e64[fin], d64[fin]
    if not bool(torch.isfinite(d64).all()):
        return False, "the delegate returned non-finite values where eager is finite", metrics
    err = (d64 - e64).abs()
    metrics["max_abs_err"] = _round(float(err.max()))
    if tol["kind"] == "sqnr":
        s = metrics["sqnr_db"]
        ok = s is None or s >= tol["min_sqnr_db"]
        return ok, "" if ok else f"SQNR {s} dB < {tol['min_sqnr_db']} dB", metrics
    assert scale is not None and scale > 0
    lsb = err / scale
    metrics["max_lsb"] = _round(float(lsb.max()), 4)
    if r is not None:
        r64 = r.detach().double().reshape(-1)[fin]
        excess = lsb - (r64 - e64).abs() / scale
        bias = float(((d64 - r64) / scale).mean())
        tol["reference_max_lsb"] = _round(float(((r64 - e64).abs() / scale).max()), 4)
        tol["measured_bias_lsb"] = _round(bias, 4)
        # the three values arrive as float32: each is off by up to half an ulp of its own magnitude, which for
        # int16 codes near full scale is a few thousandths of a step (a 1-step difference read as 1.004)
        slack = 1e-3 + _F32_EPS * (e64.abs() + d64.abs() + r64.abs()) / scale
        over = excess - slack
        worst = float(excess[int(torch.argmax(over))])
        if float(over.max()) > QUANT_MAX_EXCESS_LSB:
            i = int(torch.argmax(over))
            return False, (f"delegate error exceeds the reference's by {worst:.3g} LSB (> {QUANT_MAX_EXCESS_LSB}) "
                           f"at flat index {i}: eager {float(e64[i]):.6g}, reference {float(r64[i]):.6g}, "
                           f"delegate {float(d64[i]):.6g}, scale {scale:.4g}"), metrics
        if abs(bias) > QUANT_MAX_BIAS_LSB:
            return False, (f"systematic offset: mean(delegate - reference) = {bias:+.3g} LSB "
                           f"(limit ±{QUANT_MAX_BIAS_LSB}), scale {scale:.4g}"), metrics
        return True, "", metrics
    limit = tol["max_lsb"]
    if float(lsb.max()) > limit:
        i = int(torch.argmax(lsb))
        n = int((lsb > limit).sum())
        return False, (f"{n}/{lsb.numel()} elements beyond {limit} LSB; worst {float(lsb[i]):.3g} LSB: "
                       f"eager {float(e64[i]):.6g}, delegate {float(d64[i]):.6g}, scale {scale:.4g}"), metrics
    return True, "", metrics


# ----------------------------------------------------------------------------- entry points


@dataclass
class OutputQuant:
    """What the runner knows about one program output at a quantized precision."""

    scale: float | None = None
    bits: int = 8
    reference: torch.Tensor | None = None


def judge_op(precision: PrecisionLike, expected: Sequence[torch.Tensor], actual: Sequence[torch.Tensor], *,
             reduction: int = 1, cond: float = 1.0,
             quant: Sequence[OutputQuant | None] | None = None) -> Verdict:
    """Judge one op sample; ``expected``/``actual`` are the flat outputs (already checked for count,
    dtype and shape)."""
    quantized = is_quantized(precision)
    worst_metrics: dict[str, Any] = {"max_abs_err": None, ("max_lsb" if quantized else "max_ulp"): None,
                                     "sqnr_db": None}
    tols: list[dict[str, Any]] = []
    problems: list[str] = []
    for k, (e, d) in enumerate(zip(expected, actual)):
        tag = f"output {k}: " if len(expected) > 1 else ""
        if not e.dtype.is_floating_point:
            q = quant[k] if quantized and quant is not None and k < len(quant) else None
            ref = q.reference if q is not None else None
            if ref is not None and ref.shape == d.shape and ref.dtype == d.dtype:
                # a bool or index result of quantized inputs (a comparison, argmax) flips wherever quantization
                # moves a value across the threshold or breaks a tie; that is quantization's doing, judged by the
                # plugin's reference, and the backend must match the reference exactly
                n, msg = _compare_exact(ref, d, against="the reference gives")
                tols.append({"kind": "exact", "dtype": str(e.dtype).removeprefix("torch."), "against": "reference",
                             "reference_differs_from_eager": int((ref.reshape(-1) != e.reshape(-1)).sum())})
            else:
                n, msg = _compare_exact(e, d)
                tols.append({"kind": "exact", "dtype": str(e.dtype).removeprefix("torch.")})
            if n:
                problems.append(tag + msg)
            continue
        if quantized:
            q = (quant[k] if quant is not None and k < len(quant) else None) or OutputQuant()
            tol = quant_tolerance(precision, reduction, cond, q.scale, q.bits, q.reference is not None)
            ok, msg, m = _compare_quant(e, d, q.reference, q.scale, tol)
            tols.append(tol)
            if not ok:
                problems.append(tag + msg)
        else:
            tol = float_tolerance(precision, reduction, cond)
            n, msg, m = _compare_float(e, d, precision, reduction, cond)
            tols.append(tol)
            if n:
                problems.append(tag + msg)
        _merge(worst_metrics, m)
    tolerance = tols[0] if len(tols) == 1 else {"kind": "per_output", "outputs": tols}
    return Verdict(not problems, "; ".join(problems), worst_metrics, tolerance)


def judge_model(precision: PrecisionLike, expected: Sequence[torch.Tensor],
                actual: Sequence[torch.Tensor]) -> Verdict:
    """Judge one model sample by SQNR per output (non-finite agreement and exact integers too)."""
    precision = as_precision(precision)
    quantized = precision.quantized
    thr = sqnr_floor(precision)
    metrics: dict[str, Any] = {"max_abs_err": None, ("max_lsb" if quantized else "max_ulp"): None,
                               "sqnr_db": None}
    problems: list[str] = []
    sq: list[float | None] = []
    for k, (e, d) in enumerate(zip(expected, actual)):
        tag = f"output {k}: "
        if not e.dtype.is_floating_point:
            n, msg = _compare_exact(e, d)
            if n:
                problems.append(tag + msg)
            continue
        e64, d64 = e.detach().double().reshape(-1), d.detach().double().reshape(-1)
        nan_bad = int((torch.isnan(e64) != torch.isnan(d64)).sum())
        inf_bad = int((torch.isinf(e64) & (e64 != d64)).sum() + (torch.isfinite(e64) & torch.isinf(d64)).sum())
        if nan_bad or inf_bad:
            problems.append(tag + f"{nan_bad + inf_bad} non-finite values disagree with eager")
        s = sqnr_db(e64, d64)
        sq.append(s)
        both = torch.isfinite(e64) & torch.isfinite(d64)
        err = float((d64 - e64)[both].abs().max()) if bool(both.any()) else 0.0
        m: dict[str, Any] = {"max_abs_err": _round(err), "sqnr_db": _round(s, 4)}
        if not quantized and bool(both.any()):
            dt = float_dtype(precision)
            rms = float(e64[both].pow(2).mean().sqrt())
            mag = torch.clamp(e64[both].abs(), min=rms)
            m["max_ulp"] = _round(float(((d64 - e64)[both].abs() / ulp(mag, dt)).max()), 4)
        _merge(metrics, m)
        if s is not None and s < thr:
            problems.append(tag + f"SQNR {s:.1f} dB < {thr} dB (max abs err {err:.3g})")
    tol = {"kind": "sqnr", "precision": precision.name, "min_sqnr_db": thr,
           "per_output_sqnr_db": [_round(x, 4) for x in sq], "nonfinite": "exact", "integers": "exact"}
    return Verdict(not problems, "; ".join(problems), metrics, tol)


def _merge(into: dict[str, Any], m: dict[str, Any]) -> None:
    """Worst-of merge: max of errors, min of SQNR."""
    for k, v in m.items():
        if v is None:
            continue
        cur = into.get(k)
        if cur is None:
            into[k] = v
        elif k == "sqnr_db":
            into[k] = min(cur, v)
        else:
            into[k] = max(cur, v)
