"""preprocess: one claimed partition -> ONNX -> (QDQ) -> QNN HTP context binary (EPContext model).

Pipeline:
  1. torch.onnx (dynamo exporter) turns the partition's ExportedProgram into an ONNX model;
  2. quantized precisions: onnxruntime's QNN quantization tooling (``qnn_preprocess_model``,
     ``get_qnn_qdq_config``, ``quantize``) inserts QuantizeLinear/DequantizeLinear pairs,
     calibrated on the partition inputs the core captured;
  3. an ORT session on the QNN EP (HTP backend, CPU fallback disabled) prepares the graph and
     writes an EPContext model with the context binary embedded.

The blob is the EPContext model; for quantized precisions the QDQ model (the fake-quant reference run by
``reference_execute``) travels beside it as a blob section (:mod:`~delegate_sdk_qnn.blob_format`).
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch.export import ExportedProgram

from delegate_sdk.errors import brief
from delegate_sdk.types import CompiledDelegate, QuantParams
from delegate_sdk_qnn import blob_format, qnn_env
from delegate_sdk_qnn.options import QnnConfig

log = logging.getLogger(__name__)

BLOB_FORMAT = blob_format.BLOB_FORMAT
BLOB_FORMAT_VERSION = blob_format.BLOB_FORMAT_VERSION

_ONNX_TO_NUMPY = {1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64",
                  9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64"}
_QUANT_DTYPES = {2: "uint8", 3: "int8", 4: "uint16", 5: "int16"}


@dataclass(frozen=True)
class BoundaryTensor:
    """One tensor crossing the partition boundary: ONNX name, torch dtype, static shape, ONNX dtype."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    onnx_dtype: str

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d


#: loggers of the exporter and the ORT quantizer that talk while a partition compiles
_TOOLCHAIN_LOGGERS = ("torch.onnx", "torch._export", "torch.export", "onnxscript", "onnxruntime")


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _static_shape(t: Any, what: str) -> tuple[int, ...]:
    # a SymInt would convert to its hint with int(): test the type instead
    if not all(isinstance(d, int) for d in t.shape):
        raise ValueError(f"qnn: {what} has a dynamic shape {tuple(t.shape)}; QNN HTP needs static shapes")
    return tuple(t.shape)


def _boundary(ep: ExportedProgram) -> tuple[list[tuple[str, torch.Tensor]], list[torch.Tensor]]:
    """User inputs (name, fake value) and output values of a partition program."""
    user = set(ep.graph_signature.user_inputs)
    inputs = [(n.name, n.meta["val"]) for n in ep.graph.nodes if n.op == "placeholder" and n.name in user]
    out_node = next(n for n in ep.graph.nodes if n.op == "output")
    outs: list[torch.Tensor] = []
    for a in torch.utils._pytree.tree_leaves(out_node.args[0]):
        v = a.meta.get("val") if isinstance(a, torch.fx.Node) else a
        if not isinstance(v, torch.Tensor):
            raise ValueError(f"qnn: partition output {a} is not a tensor")
        outs.append(v)
    return inputs, outs


_registry_lock = threading.Lock()
_registry: Any = None


def _torchlib_registry() -> Any:
    """torch.onnx's op registry, built once per process.

    ``torch.onnx.export`` rebuilds it from onnxscript's torchlib on every call (about 4 s,
    most of the export time of a small partition); the exporter's own entry point accepts a
    prebuilt one. Returns None when that internal API is not there (then the public export
    is used).
    """
    global _registry
    with _registry_lock:
        if _registry is None:
            try:
                from torch.onnx._internal.exporter import _constants, _registration

                _registry = _registration.ONNXRegistry().from_torchlib(opset_version=_constants.TORCHLIB_OPSET)
            except Exception:
                log.debug("torch.onnx registry API unavailable; using torch.onnx.export", exc_info=True)
                _registry = False
        return _registry or None


def _root_cause(e: BaseException) -> str:
    while e.__cause__ is not None:
        e = e.__cause__
    return brief(e)


def export_onnx(ep: ExportedProgram) -> Any:
    """The partition as an ONNX ModelProto, via the torch.onnx dynamo exporter."""
    with qnn_env.captured_native_output(_TOOLCHAIN_LOGGERS):
        registry = _torchlib_registry()
        try:
            if registry is not None:
                from torch.onnx import _constants as onnx_constants
                from torch.onnx._internal.exporter import _core

                onnx_program = _core.export(ep, (), None, registry=registry, optimize=True, verbose=False,
                                            opset_version=onnx_constants.ONNX_DEFAULT_OPSET)
            else:
                onnx_program = torch.onnx.export(ep, (), dynamo=True, optimize=True, verbose=False)
        except Exception as e:
            raise RuntimeError(f"qnn: torch.onnx could not export the partition: {_root_cause(e)}") from e
    return onnx_program.model_proto


def _value_info_types(model: Any) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    def np_type(v: Any) -> str:
        t = _ONNX_TO_NUMPY.get(v.type.tensor_type.elem_type)
        if t is None:
            raise RuntimeError(f"qnn: the ONNX export has boundary tensor {v.name!r} of ONNX type "
                               f"{v.type.tensor_type.elem_type}, which this plugin does not pass")
        return t

    return ([(v.name, np_type(v)) for v in model.graph.input],
            [(v.name, np_type(v)) for v in model.graph.output])


def _to_numpy(t: torch.Tensor, dtype: str) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().numpy().astype(dtype, copy=False))


class _CalibrationReader:
    """onnxruntime.quantization.CalibrationDataReader over the core's captured inputs."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self._feeds = feeds
        self._it = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self._feeds)

    def __len__(self) -> int:
        return len(self._feeds)


def _finite_calibration(feeds: list[dict[str, np.ndarray]]) -> None:
    """Clip non-finite calibration values (a -inf attention mask computed on the host) to the
    tensor's finite range: an infinite range has no quantization, and QNN rejects the
    Quantize it would produce. At run time such values saturate at the range's ends."""
    for name in {k for f in feeds for k in f}:
        arrs = [f[name] for f in feeds if name in f and f[name].dtype.kind == "f"]
        if not arrs or all(np.isfinite(a).all() for a in arrs):
            continue
        finite = np.concatenate([a[np.isfinite(a)].ravel() for a in arrs] + [np.zeros(1, arrs[0].dtype)])
        lo, hi = float(finite.min()), float(finite.max())
        for f in feeds:
            if name in f:
                f[name] = np.nan_to_num(f[name], nan=0.0, posinf=hi, neginf=lo)
        log.warning("qnn: calibration input %r holds non-finite values; its quantization range is "
                    "clipped to the finite values [%g, %g]", name, lo, hi)


def quantize_qdq(model_path: str, feeds: list[dict[str, np.ndarray]], cfg: QnnConfig, tmp: str) -> str:
    """QDQ-quantize ``model_path`` for QNN HTP; returns the path of the QDQ model."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantType, quantize
    from onnxruntime.quantization.execution_providers.qnn import get_qnn_qdq_config, qnn_preprocess_model

    class Reader(_CalibrationReader, CalibrationDataReader):
        pass

    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[cfg.calibration_method]
    act = QuantType.QUInt16 if cfg.precision == "a16w8" else QuantType.QUInt8
    src = model_path
    pre = os.path.join(tmp, "preprocessed.onnx")
    qdq = os.path.join(tmp, "qdq.onnx")
    with qnn_env.captured_native_output(_TOOLCHAIN_LOGGERS):
        try:
            # fuses the Erf-GELU and ReduceMean-LayerNorm sequences into single QNN ops
            if qnn_preprocess_model(model_path, pre, fuse_layernorm=True):
                src = pre
            import onnx

            overrides = weight_overrides(onnx.load(src, load_external_data=False))
            # per_channel stays off globally: the tool would otherwise also try per-channel
            # LayerNorm/BatchNorm scales, which QNN rejects; conv/linear weights get it explicitly.
            qcfg = get_qnn_qdq_config(src, Reader(feeds), calibrate_method=method, activation_type=act,
                                      weight_type=QuantType.QInt8, per_channel=False, weight_symmetric=True,
                                      init_overrides=overrides or None)
            # quantize data-movement ops (MaxPool, Transpose, Gather, ...) even when they start the
            # partition, so that an int8 partition never silently computes in float
            qcfg.extra_options["ForceQuantizeNoInputCheck"] = True
            quantize(src, qdq, qcfg)
        except Exception as e:
            raise RuntimeError(f"qnn: QDQ quantization ({cfg.precision}, {cfg.calibration_method}) "
                               f"failed: {brief(e)}") from e
    return qdq


def weight_overrides(model: Any) -> dict[str, list[dict[str, Any]]]:
    """Tensor quantization overrides QNN HTP needs on top of the tool's defaults.

    * Conv, ConvTranspose (ungrouped) and Gemm weights: per output channel (int8 symmetric);
    * LayerNormalization scale: uint8 asymmetric, since HTP's LayerNorm rejects a signed
      gamma (backendValidateOpConfig error 3110 with int8 symmetric).
    """
    from onnxruntime.quantization import QuantType

    inits = {i.name: i for i in model.graph.initializer}
    out: dict[str, list[dict[str, Any]]] = {}
    for n in model.graph.node:
        if len(n.input) < 2 or n.input[1] not in inits:
            continue
        attrs = {a.name: a for a in n.attribute}
        if n.op_type == "LayerNormalization":
            out[n.input[1]] = [{"quant_type": QuantType.QUInt8, "symmetric": False}]
            continue
        if n.op_type == "Conv":
            axis = 0
        elif n.op_type == "ConvTranspose":
            if "group" in attrs and attrs["group"].i != 1:
                continue  # weight axis 1 holds channels of one group only; keep per-tensor
            axis = 1
        elif n.op_type == "Gemm":
            axis = 0 if ("transB" in attrs and attrs["transB"].i) else 1
        else:
            continue
        if len(inits[n.input[1]].dims) > axis:
            out[n.input[1]] = [{"axis": axis}]
    return out


def _affine(lo: float, hi: float, qmax: int) -> tuple[float, int]:
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    span = max(hi - lo, 1e-4)  # the tool's MinimumRealRange
    scale = span / qmax
    return scale, int(min(max(round(-lo / scale), 0), qmax))


def quantize_boundary(qdq_path: str, float_path: str, feeds: list[dict[str, np.ndarray]], cfg: QnnConfig) -> None:
    """Make every float graph input and output of the QDQ model pass through a Q/DQ pair.

    The ORT tool quantizes an op only when its input is already quantized for some op kinds
    (Relu, Clip, Where, ...): a partition that starts or ends with one would otherwise run in
    float on the HTP and report no output quantization. Ranges are the min/max over the
    calibration inputs (float model on the CPU provider).
    """
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    model = onnx.load(qdq_path)
    g = model.graph
    producers = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    in_names = {v.name for v in g.input}
    fix_in = [v.name for v in g.input if v.type.tensor_type.elem_type == TensorProto.FLOAT
              and any(c.op_type != "QuantizeLinear" for c in consumers.get(v.name, []))]
    fix_out = [v.name for v in g.output if v.type.tensor_type.elem_type == TensorProto.FLOAT
               and v.name not in in_names
               and (v.name not in producers or producers[v.name].op_type != "DequantizeLinear")]
    if not fix_in and not fix_out:
        return

    ranges: dict[str, tuple[float, float]] = {}
    for name in fix_in:
        arrs = [f[name] for f in feeds if name in f]
        lo, hi = float(min(a.min() for a in arrs)), float(max(a.max() for a in arrs))
        ranges[name] = (lo, hi)
    if fix_out:
        so = ort.SessionOptions()
        so.log_severity_level = 3
        with qnn_env.captured_native_output():
            sess = ort.InferenceSession(float_path, so, providers=["CPUExecutionProvider"])
        lo = {n: np.inf for n in fix_out}
        hi = {n: -np.inf for n in fix_out}
        for f in feeds:
            for n, a in zip(fix_out, sess.run(fix_out, f)):
                if a.size:
                    lo[n], hi[n] = min(lo[n], float(a.min())), max(hi[n], float(a.max()))
        for n in fix_out:
            ranges[n] = (lo[n] if np.isfinite(lo[n]) else 0.0, hi[n] if np.isfinite(hi[n]) else 0.0)

    sixteen = cfg.precision == "a16w8"
    qmax, qtype = (65535, TensorProto.UINT16) if sixteen else (255, TensorProto.UINT8)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 21)
    existing = next((n.domain for n in g.node if n.op_type == "QuantizeLinear"), None)
    domain = existing if existing is not None else ("com.microsoft" if sixteen and opset < 21 else "")
    if domain == "com.microsoft" and not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))

    new_nodes: list[Any] = []

    def qdq(src: str, dst: str, name: str) -> None:
        scale, zp = _affine(*ranges[name], qmax)
        g.initializer.append(helper.make_tensor(f"{name}_dsdk_scale", TensorProto.FLOAT, [], [scale]))
        g.initializer.append(helper.make_tensor(f"{name}_dsdk_zp", qtype, [], [zp]))
        new_nodes.append(helper.make_node("QuantizeLinear", [src, f"{name}_dsdk_scale", f"{name}_dsdk_zp"],
                                          [f"{name}_dsdk_q"], name=f"{name}_dsdk_Q", domain=domain))
        new_nodes.append(helper.make_node("DequantizeLinear", [f"{name}_dsdk_q", f"{name}_dsdk_scale",
                                                               f"{name}_dsdk_zp"], [dst],
                                          name=f"{name}_dsdk_DQ", domain=domain))

    for name in fix_in:
        dq = f"{name}_dsdk_dq"
        for c in consumers.get(name, []):
            if c.op_type != "QuantizeLinear":
                for k, i in enumerate(c.input):
                    if i == name:
                        c.input[k] = dq
        qdq(name, dq, name)
    for name in fix_out:
        pre = f"{name}_dsdk_pre"
        for n in g.node:
            for k, o in enumerate(n.output):
                if o == name:
                    n.output[k] = pre
            for k, i in enumerate(n.input):
                if i == name:
                    n.input[k] = pre
        qdq(pre, name, name)
    # boundary Q/DQ first for inputs keeps the node list topologically sorted; outputs go last
    n_in = 2 * len(fix_in)
    nodes = new_nodes[:n_in] + list(g.node) + new_nodes[n_in:]
    del g.node[:]
    g.node.extend(nodes)
    onnx.save(model, qdq_path)
    log.debug("qnn: added boundary Q/DQ on inputs %s and outputs %s", fix_in, fix_out)


def output_quant_params(qdq_model: Any) -> list[QuantParams | None]:
    """Each graph output's quantization, read from the DequantizeLinear that produces it."""
    from onnx import numpy_helper

    inits = {i.name: i for i in qdq_model.graph.initializer}
    consts = {}
    for n in qdq_model.graph.node:
        if n.op_type == "Constant" and n.output:
            for a in n.attribute:
                if a.name == "value":
                    consts[n.output[0]] = a.t
    producer = {o: n for n in qdq_model.graph.node for o in n.output}

    def tensor(name: str) -> Any:
        return inits.get(name) if name in inits else consts.get(name)

    out: list[QuantParams | None] = []
    for vo in qdq_model.graph.output:
        node = producer.get(vo.name)
        if node is None or node.op_type != "DequantizeLinear" or len(node.input) < 2:
            out.append(None)
            continue
        scale_t = tensor(node.input[1])
        zp_t = tensor(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if scale_t is None:
            out.append(None)
            continue
        scale = numpy_helper.to_array(scale_t).astype(np.float64).reshape(-1)
        zp = numpy_helper.to_array(zp_t).astype(np.int64).reshape(-1) if zp_t is not None else np.zeros(1, np.int64)
        qdtype = _QUANT_DTYPES.get(zp_t.data_type, "uint8") if zp_t is not None else "uint8"
        if scale.size == 1:
            out.append(QuantParams(float(scale[0]), int(zp[0]), qdtype))
        else:
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            out.append(QuantParams(float(scale.max()), int(zp[0]), qdtype, tuple(float(s) for s in scale), int(axis)))
    return out


def compile_context(model_path: str, cfg: QnnConfig, tmp: str,
                    hosted: set[str] = frozenset()) -> tuple[bytes, int, dict[str, int]]:
    """Prepare ``model_path`` on the QNN HTP backend; returns (EPContext model bytes, binary size, the op types
    left to the CPU provider: only ever nodes exported from the ``hosted`` fx nodes)."""
    import onnx
    import onnxruntime as ort

    ctx_path = os.path.join(tmp, "epcontext.onnx")
    # severity 2 so QNN's per-node validation warnings are captured for the error message
    so = qnn_env.session_options(cfg.provider_options(), log_severity=2, context_path=ctx_path,
                                 cpu_nodes=bool(hosted))
    err: Exception | None = None
    with qnn_env.captured_native_output() as native:
        try:
            ort.InferenceSession(model_path, so)
        except Exception as e:
            err = e
    if err is not None:  # reported after the capture closes: only then are QNN's log lines in
        raise RuntimeError(f"qnn: QNN HTP rejected the partition ({cfg.precision}, soc_model "
                           f"{cfg.soc_model}): {qnn_env.first_error(native, err)}")
    if not os.path.exists(ctx_path):
        raise RuntimeError("qnn: the QNN EP wrote no EPContext model")
    ctx = onnx.load(ctx_path)
    cpu_nodes: dict[str, int] = {}
    if hosted:
        from delegate_sdk_qnn.hosting import check_cpu_nodes

        cpu_nodes = check_cpu_nodes(ctx, onnx.load(model_path), set(hosted))
    else:
        foreign = sorted({n.op_type for n in ctx.graph.node if n.op_type != "EPContext"})
        if foreign:
            raise RuntimeError(f"qnn: the EPContext model still holds non-QNN nodes {foreign}")
    size = 0
    for n in ctx.graph.node:
        for a in n.attribute:
            if a.name == "ep_cache_context":
                size += len(a.s)
    with open(ctx_path, "rb") as f:
        return f.read(), size, cpu_nodes


def fx_node_name(node: Any) -> str | None:
    """The fx node an ONNX node was exported from (torch.onnx's ``pkg.torch.onnx.fx_node`` metadata)."""
    for p in node.metadata_props:
        if p.key == "pkg.torch.onnx.fx_node" and (m := re.match(r"%(\S+)\s*:", p.value)):
            return m.group(1)
    return None


def _debug_map(model: Any) -> dict[str, list[str]]:
    return {n.name or n.op_type: [fx] for n in model.graph.node if (fx := fx_node_name(n)) is not None}


def _fold_constant_partition(ep: ExportedProgram, fx_outputs: list[torch.Tensor], cfg: QnnConfig) -> CompiledDelegate:
    """A partition without runtime inputs only transforms weights (e.g. the transpose of a
    linear weight whose matmul went elsewhere). A QNN graph needs inputs, and any compiler folds
    such a subgraph: evaluate it once here and store the results."""
    with torch.no_grad():
        values = torch.utils._pytree.tree_leaves(ep.module()())
    if len(values) != len(fx_outputs):
        raise RuntimeError(f"qnn: folding a weight-only partition gave {len(values)} outputs, expected "
                           f"{len(fx_outputs)}")
    outputs, chunks = [], []
    for i, (v, spec) in enumerate(zip(values, fx_outputs)):
        a = v.detach().contiguous().cpu().numpy()
        outputs.append(BoundaryTensor(f"const{i}", _dtype_name(spec.dtype), _static_shape(spec, f"output {i}"),
                                      str(a.dtype)))
        chunks.append(a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes())
    meta = {
        **blob_format.format_meta({}),
        "constant": True,
        "inputs": [],
        "outputs": [b.to_json() for b in outputs],
        "output_quant": [None] * len(outputs),
        "context_binary_bytes": 0,
        "versions": qnn_env.versions(),
        "options": cfg.to_json(),
        "provider_options": cfg.provider_options(),
    }
    log.debug("qnn: weight-only partition folded at compile time (%d outputs)", len(outputs))
    return CompiledDelegate(blob=b"".join(chunks), format=BLOB_FORMAT,
                            format_version=BLOB_FORMAT_VERSION, meta=meta, output_quant=[None] * len(outputs),
                            perf=None, debug_map={}, op_counts={})


def compile_partition(ep: ExportedProgram, options: dict[str, Any],
                      calibration: Sequence[Sequence[torch.Tensor]] | None) -> CompiledDelegate:
    """The ``preprocess`` hook: see the module docstring."""
    import onnx

    cfg = QnnConfig.from_options(options)
    qnn_env.ensure_registered()
    t0 = time.perf_counter()
    fx_inputs, fx_outputs = _boundary(ep)
    if not fx_inputs:
        return _fold_constant_partition(ep, fx_outputs, cfg)
    if cfg.quantized and not calibration:
        raise ValueError(f"qnn: precision {cfg.precision} needs calibration inputs for this partition, got none")

    model = export_onnx(ep)
    onnx_ins, onnx_outs = _value_info_types(model)
    if len(onnx_ins) != len(fx_inputs) or len(onnx_outs) != len(fx_outputs):
        raise RuntimeError(f"qnn: the ONNX export has {len(onnx_ins)} inputs/{len(onnx_outs)} outputs, "
                           f"the partition {len(fx_inputs)}/{len(fx_outputs)}")
    inputs = [BoundaryTensor(on, _dtype_name(v.dtype), _static_shape(v, f"input {fn}"), odt)
              for (fn, v), (on, odt) in zip(fx_inputs, onnx_ins)]
    outputs = [BoundaryTensor(on, _dtype_name(v.dtype), _static_shape(v, f"output {on}"), odt)
               for v, (on, odt) in zip(fx_outputs, onnx_outs)]
    onnx_ops = dict(Counter(n.op_type for n in model.graph.node))
    t_export = time.perf_counter() - t0

    sections: dict[str, bytes] = {}
    output_quant: list[QuantParams | None] = [None] * len(outputs)
    with tempfile.TemporaryDirectory(prefix="delegate_sdk_qnn.") as tmp:
        float_path = os.path.join(tmp, "float.onnx")
        onnx.save(model, float_path)
        to_compile = float_path
        t1 = time.perf_counter()
        if cfg.quantized:
            feeds = []
            for i, sample in enumerate(calibration or []):
                if len(sample) != len(inputs):
                    raise ValueError(f"qnn: calibration sample {i} has {len(sample)} tensors, "
                                     f"the partition takes {len(inputs)}")
                feeds.append({b.name: _to_numpy(t, b.onnx_dtype) for b, t in zip(inputs, sample)})
            _finite_calibration(feeds)
            to_compile = quantize_qdq(float_path, feeds, cfg, tmp)
            quantize_boundary(to_compile, float_path, feeds, cfg)
            qdq_model = onnx.load(to_compile)
            output_quant = output_quant_params(qdq_model)
            with open(to_compile, "rb") as f:
                sections[blob_format.QDQ_SECTION] = f.read()
        t_quant = time.perf_counter() - t1
        t2 = time.perf_counter()
        from delegate_sdk_qnn.hosting import hosted_fx_nodes

        ctx_bytes, ctx_size, cpu_nodes = compile_context(to_compile, cfg, tmp, hosted_fx_nodes(ep))
        t_compile = time.perf_counter() - t2

    meta = {
        **blob_format.format_meta(sections),
        "inputs": [b.to_json() for b in inputs],
        "outputs": [b.to_json() for b in outputs],
        "output_quant": [q.to_json() if q is not None else None for q in output_quant],
        "context_binary_bytes": ctx_size,
        "versions": qnn_env.versions(),
        "options": cfg.to_json(),
        "provider_options": cfg.provider_options(),
        "onnx_ops": onnx_ops,
        # hosted ops: what ONNX Runtime's CPU provider runs in this partition (the runtime then allows it)
        "cpu_nodes": cpu_nodes,
        "timings_s": {"export": round(t_export, 4), "quantize": round(t_quant, 4),
                      "qnn_prepare": round(t_compile, 4)},
    }
    log.debug("qnn: compiled partition (%s): %d ONNX nodes, context binary %d bytes, %.2fs",
              cfg.precision, sum(onnx_ops.values()), ctx_size, time.perf_counter() - t0)
    return CompiledDelegate(blob=ctx_bytes, format=BLOB_FORMAT, format_version=BLOB_FORMAT_VERSION,
                            meta=meta, output_quant=output_quant, perf=None, debug_map=_debug_map(model),
                            op_counts=onnx_ops, sections=sections)
