"""preprocess: one partition (an ExportedProgram) -> a Core ML ML Program package, packed as the blob."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind, OutputKind

from delegate_sdk import CompiledDelegate
from delegate_sdk.errors import brief
from delegate_sdk_coreml import package
from delegate_sdk_coreml._quiet import import_coremltools, quiet
from delegate_sdk_coreml.mil_errors import MILError, UnsupportedMILOpError
from delegate_sdk_coreml.mil_interpreter import Interpreter
from delegate_sdk_coreml.mil_reader import MILProgram
from delegate_sdk_coreml.options import OPSET_OF_TARGET

log = logging.getLogger(__name__)

BLOB_FORMAT = "coreml-mlpackage-zip"
BLOB_FORMAT_VERSION = 1

_TORCH_DTYPES = {"float32", "float16", "int32", "int64", "bool"}


@dataclass(frozen=True)
class TensorInfo:
    """One tensor at the partition boundary: its name in the ML Program, torch dtype and shape."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TensorInfo:
        return cls(d["name"], d["dtype"], tuple(int(s) for s in d["shape"]))


@dataclass(frozen=True)
class OutputInfo(TensorInfo):
    #: "program" (an output of the ML Program) or "input" (a partition input returned unchanged)
    source: str = "program"
    #: for source == "input": which input
    input_index: int = -1

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> OutputInfo:
        return cls(d["name"], d["dtype"], tuple(int(s) for s in d["shape"]), d.get("source", "program"),
                   int(d.get("input_index", -1)))


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _tensor_val(node: torch.fx.Node, what: str) -> torch.Tensor:
    val = node.meta.get("val")
    if not isinstance(val, torch.Tensor):
        raise ValueError(f"{what} {node.name!r} is not a tensor (got {type(val).__name__})")
    if any(not isinstance(d, int) for d in val.shape):
        raise ValueError(f"{what} {node.name!r} has a dynamic shape {list(val.shape)}; the Core ML plugin "
                         "compiles static shapes only")
    if _dtype_name(val.dtype) not in _TORCH_DTYPES:
        raise ValueError(f"{what} {node.name!r} has dtype {_dtype_name(val.dtype)}; supported at the partition "
                         f"boundary: {', '.join(sorted(_TORCH_DTYPES))}")
    return val


def _boundary(program: ExportedProgram) -> tuple[list[torch.fx.Node], list[tuple[OutputKind, Any]]]:
    placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    user_inputs = [placeholders[s.arg.name] for s in program.graph_signature.input_specs
                   if s.kind == InputKind.USER_INPUT]
    outputs = [(s.kind, s.arg) for s in program.graph_signature.output_specs]
    return user_inputs, outputs


@contextlib.contextmanager
def _coremltools_friendly(program: ExportedProgram) -> Iterator[None]:
    """Spell out what coremltools' converters mis-read, for the duration of the conversion.

    The meaning is unchanged: ``hardtanh``/``leaky_relu`` get float bounds (coremltools builds the MIL op with
    int32 constants from int bounds and fails), and a max pool without stride gets stride = kernel size
    (coremltools requires the stride argument); inputs get a contiguous example layout.
    """
    saved: list[tuple[torch.fx.Node, tuple[Any, ...], dict[str, Any]]] = []
    saved_vals: list[tuple[torch.fx.Node, Any]] = []
    user_inputs, _ = _boundary(program)
    for node in user_inputs:
        val = node.meta.get("val")
        if isinstance(val, torch.Tensor) and val.dim_order() != tuple(range(val.dim())):
            # coremltools rejects inputs whose example was non-contiguous (e.g. a permuted tensor crossing into
            # the partition); execute makes every input contiguous, so convert with a contiguous layout
            saved_vals.append((node, val))
            node.meta["val"] = torch.empty(tuple(val.shape), dtype=val.dtype, device="meta")
    for node in program.graph.nodes:
        if node.op != "call_function":
            continue
        args = list(node.args)
        if node.target == torch.ops.aten.hardtanh.default:
            lo = args[1] if len(args) > 1 else node.kwargs.get("min_val", -1.0)
            hi = args[2] if len(args) > 2 else node.kwargs.get("max_val", 1.0)
            new = (args[0], float(lo), float(hi))
        elif node.target == torch.ops.aten.leaky_relu.default:
            slope = args[1] if len(args) > 1 else node.kwargs.get("negative_slope", 0.01)
            new = (args[0], float(slope))
        elif node.target in (torch.ops.aten.max_pool2d_with_indices.default,
                             torch.ops.aten.max_pool3d_with_indices.default):
            if len(args) >= 3 and args[2]:
                continue
            kernel = args[1]
            new = (args[0], kernel, list(kernel), *args[3:])
        else:
            continue
        saved.append((node, node.args, dict(node.kwargs)))
        node.args = new
        if node.target in (torch.ops.aten.hardtanh.default, torch.ops.aten.leaky_relu.default):
            node.kwargs = {}
    try:
        yield
    finally:
        for node, args, kwargs in saved:
            node.args = args
            node.kwargs = kwargs
        for node, val in saved_vals:
            node.meta["val"] = val


def _remove_temp_package(mlmodel: Any) -> None:
    """coremltools writes the converted package to a temp dir it only removes at interpreter exit."""
    path = getattr(mlmodel, "package_path", None)
    if getattr(mlmodel, "is_temp_package", False) and path and os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)


def _pass_pipeline(ct: Any) -> Any:
    """coremltools' default graph passes minus ``add_int16_cast``.

    That pass (fp16 only) keeps the int16/uint16 choice of the previous op in instance state, so runtime
    gather indices after a constant-index op get cast to uint16: negative indices wrap to 65535 and the
    negative-index guard that follows is skipped. Index arithmetic stays int32 without it.
    """
    pipeline = ct.PassPipeline.DEFAULT
    pipeline.remove_passes({"common::add_int16_cast"})
    return pipeline


def _debug_map(mil: MILProgram, node_names: list[str]) -> dict[str, list[str]]:
    """Best effort: coremltools names MIL ops after the torch node they come from (plus suffixes)."""
    names = sorted(node_names, key=len, reverse=True)
    out: dict[str, list[str]] = {}
    for op in mil.function().operations:
        if op.type == "const":
            continue
        for n in names:
            if op.name == n or op.name.startswith(n + "_"):
                out[f"{op.type}:{op.name}"] = [n]
                break
    return out


@contextlib.contextmanager
def _collect_new_objects_only() -> Iterator[None]:
    """coremltools ends every ``convert`` with a full ``gc.collect()``, which walks the whole heap: 0.3 s per
    partition in a process that holds a model and the toolchains (60% of converting a small partition).
    Objects that existed before the conversion are frozen meanwhile, so that collection sees the converter's
    own garbage only; they are collectable again afterwards."""
    if gc.get_freeze_count():  # someone else froze the heap: leave their choice alone
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def compile_program(program: ExportedProgram, options: dict[str, Any], check_interpreter: bool) -> CompiledDelegate:
    """Convert ``program`` with coremltools to an ML Program at the chosen precision and deployment target.

    ``check_interpreter``: the blob will run on the numpy interpreter (not macOS); fail here, naming the MIL
    ops, if it uses one the interpreter lacks (the claim rules should have kept such nodes away).
    """
    precision = options.get("precision", "fp16")
    target_name = options.get("minimum_deployment_target", "iOS17")
    compute_units = options.get("compute_units", "all")
    if precision not in ("fp16", "fp32"):
        raise ValueError(f"precision {precision!r} is not supported by the Core ML plugin (fp16, fp32)")

    user_inputs, outputs = _boundary(program)
    inputs_info = []
    for node in user_inputs:
        val = _tensor_val(node, "input")
        inputs_info.append(TensorInfo(node.name, _dtype_name(val.dtype), tuple(int(d) for d in val.shape)))
    for kind, arg in outputs:
        if kind != OutputKind.USER_OUTPUT:
            raise ValueError(f"partition output of kind {kind.name} (mutation) is not supported by the Core ML plugin")
    call_nodes = [n for n in program.graph.nodes if n.op == "call_function"]
    if not call_nodes:
        raise ValueError("the partition has no operations to compile")

    ct = import_coremltools()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dsdk-coreml-") as tmp:
        pkg_path = Path(tmp) / package.PACKAGE_DIR
        try:
            with quiet(), _coremltools_friendly(program), _collect_new_objects_only():
                mlmodel = ct.convert(
                    program,
                    convert_to="mlprogram",
                    compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32,
                    minimum_deployment_target=getattr(ct.target, target_name),
                    compute_units=getattr(ct.ComputeUnit, compute_units.upper()),
                    pass_pipeline=_pass_pipeline(ct),
                    skip_model_load=True,
                )
                try:
                    mlmodel.save(str(pkg_path))
                finally:
                    _remove_temp_package(mlmodel)
        except Exception as e:
            raise RuntimeError(f"coremltools could not convert the partition: {brief(e, 300)}") from e
        convert_s = time.perf_counter() - t0
        package.normalize_package(pkg_path)
        blob = package.pack(pkg_path)
        # read back what was saved: the meta and checks describe the blob, not the in-memory model
        mil = MILProgram.from_package(pkg_path)

    fn = mil.function()
    if check_interpreter:
        try:
            Interpreter(mil)
        except UnsupportedMILOpError as e:
            raise RuntimeError(f"the converted ML Program uses MIL ops the host runtime cannot execute: "
                               f"{', '.join(e.ops)}") from None
        except MILError as e:
            raise RuntimeError(f"the converted ML Program cannot be loaded by the host runtime: {e}") from None

    if len(fn.inputs) != len(inputs_info):
        raise RuntimeError(f"coremltools produced {len(fn.inputs)} inputs for a partition with {len(inputs_info)}")
    inputs_info = [TensorInfo(mil_name, info.dtype, info.shape) for (mil_name, _), info in zip(fn.inputs, inputs_info)]

    outputs_info = _match_outputs(program, fn.outputs, user_inputs)
    op_counts = mil.op_counts()
    meta = {
        "precision": precision,
        "compute_units": compute_units,
        "minimum_deployment_target": target_name,
        "opset": fn.opset,
        "expected_opset": OPSET_OF_TARGET.get(target_name, ""),
        "coremltools_version": ct.__version__,
        "inputs": [asdict(i) for i in inputs_info],
        "outputs": [asdict(o) for o in outputs_info],
        "mil_op_counts": op_counts,
        "convert_seconds": round(convert_s, 4),
    }
    log.debug("converted partition of %d nodes to %d MIL ops in %.3f s (%s, %s)", len(call_nodes),
              sum(op_counts.values()), convert_s, precision, target_name)
    return CompiledDelegate(
        blob=blob,
        format=BLOB_FORMAT,
        format_version=BLOB_FORMAT_VERSION,
        meta=meta,
        output_quant=[None] * len(outputs_info),
        perf=None,
        debug_map=_debug_map(mil, [n.name for n in call_nodes]),
        op_counts={k: v for k, v in op_counts.items() if k != "const"},
    )


def _match_outputs(program: ExportedProgram, mil_outputs: tuple[str, ...],
                   user_inputs: list[torch.fx.Node]) -> list[OutputInfo]:
    """Pair each partition output with the ML Program output that carries it.

    coremltools names program outputs after the nodes and keeps their order; a node returned twice is one program
    output, and a partition input returned as is never reaches the program.
    """
    input_pos = {n.name: i for i, n in enumerate(user_inputs)}
    out_node = next(n for n in program.graph.nodes if n.op == "output")
    args = list(out_node.args[0]) if isinstance(out_node.args[0], (list, tuple)) else [out_node.args[0]]
    for arg in args:
        if not isinstance(arg, torch.fx.Node):
            raise RuntimeError(f"partition output {arg!r} is not a tensor")
    computed = list(dict.fromkeys(a.name for a in args if a.name not in input_pos))
    if all(n in mil_outputs for n in computed):
        carrier = {n: n for n in computed}
    elif len(computed) == len(mil_outputs):
        carrier = dict(zip(computed, mil_outputs))
    else:
        raise RuntimeError(f"cannot match the partition outputs {computed} to the ML Program outputs "
                           f"{list(mil_outputs)}")
    infos = []
    for arg in args:
        val = _tensor_val(arg, "output")
        dtype, shape = _dtype_name(val.dtype), tuple(int(d) for d in val.shape)
        if arg.name in input_pos:
            infos.append(OutputInfo(arg.name, dtype, shape, "input", input_pos[arg.name]))
        else:
            infos.append(OutputInfo(carrier[arg.name], dtype, shape))
    return infos
