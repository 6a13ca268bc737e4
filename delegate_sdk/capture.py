"""Turn what the user has (a module, an ExportedProgram, a .pt2 file, "pkg.mod:factory") into core ATen."""

from __future__ import annotations

import functools
import hashlib
import importlib
import logging
import re
import sys
from dataclasses import dataclass, field
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch.export import ExportedProgram

from delegate_sdk.errors import CaptureError, UsageError, brief

log = logging.getLogger(__name__)


def resolve_op(name: str) -> Any:
    """``"aten.linear.default"`` -> ``torch.ops.aten.linear.default``; UsageError if there is no such op."""
    parts = name.split(".")
    if len(parts) == 2:
        parts.append("default")
    if len(parts) != 3:
        raise UsageError(f"op name {name!r} must look like aten.linear.default")
    try:
        return getattr(getattr(getattr(torch.ops, parts[0]), parts[1]), parts[2])
    except (AttributeError, RuntimeError):
        raise UsageError(f"no such op: {name}") from None


def as_args(example_inputs: Any) -> tuple[Any, ...]:
    """Positional example inputs as a tuple: a tuple or list is the arguments, anything else one argument."""
    return tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)


def capture(model: Any, example_inputs: tuple[Any, ...] | None, *, dynamic_shapes: Any = None,
            keep_ops: Iterable[str] = (), example_kwargs: dict[str, Any] | None = None) -> ExportedProgram:
    """Export ``model`` and decompose it to core ATen, keeping ``keep_ops`` whole.

    ``example_inputs`` are the positional arguments and ``example_kwargs`` the keyword arguments, each any
    pytree of tensors (tuples, lists, dicts, None, Python numbers), as ``torch.export`` takes them.
    """
    return decompose(export(model, example_inputs, dynamic_shapes=dynamic_shapes, example_kwargs=example_kwargs),
                     keep_ops)


def export(model: Any, example_inputs: tuple[Any, ...] | None, *, dynamic_shapes: Any = None,
           example_kwargs: dict[str, Any] | None = None) -> ExportedProgram:
    """``torch.export`` of ``model`` (an ``ExportedProgram`` is returned as it is), not yet decomposed."""
    if isinstance(model, ExportedProgram):
        ep = model
    elif isinstance(model, torch.nn.Module):
        if example_inputs is None and not example_kwargs:
            raise UsageError("example_inputs are required to capture an nn.Module")
        args = as_args(example_inputs) if example_inputs is not None else ()
        if example_kwargs is not None and not isinstance(example_kwargs, dict):
            raise UsageError(f"example_kwargs must be a dict of keyword arguments, not {type(example_kwargs).__name__}")
        model = model.eval()
        try:
            ep = torch.export.export(model, args, kwargs=dict(example_kwargs or {}), dynamic_shapes=dynamic_shapes,
                                     strict=False)
        except Exception as e:  # torch.export's own errors are long; keep the first line and say what failed
            raise CaptureError(f"torch.export could not capture {type(model).__name__}: "
                               f"{_first_line(e)}") from e
    else:
        raise UsageError(f"model must be an nn.Module or a torch.export.ExportedProgram, not {type(model).__name__}")
    return ep


def decompose(ep: ExportedProgram, keep_ops: Iterable[str] = ()) -> ExportedProgram:
    """``ep`` in core ATen with ``keep_ops`` whole (``ep`` itself is not changed)."""
    try:
        return ep.run_decompositions(dict(_decomposition_table(tuple(sorted(set(keep_ops))))))
    except Exception as e:
        raise CaptureError(f"decomposing the exported program to core ATen failed: {_first_line(e)}") from e


def model_fingerprint(ep: ExportedProgram) -> str:
    """SHA-256 of what makes a model this model: its exported ops in order, its inputs' shapes and dtypes,
    and every weight (name, dtype, shape, bytes). Stored in the artifact, so that ``run --check`` can tell
    when it is handed another model (or the same architecture with other weights)."""
    h = hashlib.sha256()
    for n in ep.graph.nodes:
        h.update(f"{n.op}:{n.target if n.op == 'call_function' else ''};".encode())
        v = n.meta.get("val") if n.op == "placeholder" else None
        if isinstance(v, torch.Tensor):
            h.update(f"{v.dtype}{tuple(v.shape)};".encode())
    tensors = {**dict(ep.state_dict), **{k: v for k, v in ep.constants.items() if isinstance(v, torch.Tensor)}}
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        h.update(f"{name}:{t.dtype}{tuple(t.shape)};".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@functools.lru_cache(maxsize=16)
def _decomposition_table(keep_ops: tuple[str, ...]) -> dict[Any, Any]:
    """Building the table costs ~0.3 s; conformance lowers hundreds of graphs with the same keep_ops."""
    table = torch.export.default_decompositions()
    for name in keep_ops:
        table.pop(resolve_op(name), None)
    return dict(table)


def _first_line(e: BaseException) -> str:
    return brief(e)


def eager_module(model: Any) -> Any:
    """What runs ``model`` on eager PyTorch: a module in eval mode, or an ExportedProgram's module (already in
    the mode it was exported in; torch refuses ``eval()`` on it, also when handed the module itself)."""
    if isinstance(model, ExportedProgram):
        return model.module()
    if not isinstance(model, torch.nn.Module):
        return model
    try:
        return model.eval()
    except NotImplementedError:
        return model


@dataclass
class ModelRef:
    """What a CLI MODEL argument names: the model and how it is called."""

    model: Any  # an nn.Module or an ExportedProgram
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)
    dynamic_shapes: Any = None

    def __iter__(self) -> Any:  # ``module, inputs, dynamic_shapes = load_model_ref(...)`` keeps working
        return iter((self.model, self.args, self.dynamic_shapes))

    def call(self, *args: Any, **kwargs: Any) -> Any:
        """Run the model eagerly."""
        m = eager_module(self.model)
        with torch.no_grad():
            return m(*args, **kwargs)


_UNREGISTERED = re.compile(r"Deserializing ([\w.]+) in pytree is not registered")


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.causes: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        e = record.exc_info[1] if record.exc_info else None
        while e is not None:
            self.causes.append(f"{type(e).__name__}: {e}")
            e = e.__cause__ or e.__context__


def load_program(path: str | Path) -> ExportedProgram:
    """``torch.export.load`` of a ``.pt2`` file, or a :class:`CaptureError` naming the file and why.

    A program whose inputs or outputs are a library's types (transformers' ``ModelOutput``) loads only once
    that library registered them with torch's pytree, which importing the defining module does: torch says
    which type it is missing (in a logged warning, not in the exception), so that module is imported and the
    file read again.
    """
    tried: set[str] = set()
    logger = logging.getLogger("torch.export")
    while True:
        records = _Records()
        # torch's own handlers would print a traceback that the error below says in one line
        handlers, propagate = logger.handlers, logger.propagate
        logger.handlers, logger.propagate = [records], False
        try:
            return torch.export.load(str(path))
        except Exception as e:
            error: BaseException = e
        finally:
            logger.handlers, logger.propagate = handlers, propagate
        found = next((m for c in records.causes if (m := _UNREGISTERED.search(c))), None)
        module = found.group(1).rpartition(".")[0] if found else ""
        if not module or module in tried:
            why = found.group(0) if found else _first_line(error)
            raise CaptureError(f"{path} is not a .pt2 file written by torch.export.save: {why}") from error
        tried.add(module)
        try:
            importlib.import_module(module)
        except ImportError as ie:
            raise CaptureError(f"{path}: the program's inputs or outputs are types of {module!r}, which does not "
                               f"import here ({ie}); install it") from None


def load_model_ref(ref: str) -> ModelRef:
    """A CLI MODEL argument -> the model, its example call and dynamic shapes.

    ``path.pt2`` is read with ``torch.export.load``; ``package.module:callable`` is imported and called, and
    must return ``(module, example_inputs)``, ``(module, example_inputs, dynamic_shapes)``, or a dict with keys
    ``model``, ``args`` and optionally ``kwargs`` (keyword arguments, e.g. ``input_ids`` and
    ``attention_mask`` of a transformers model) and ``dynamic_shapes``.
    """
    if ref.endswith(".pt2") or Path(ref).is_file():
        path = Path(ref)
        if not path.is_file():
            raise UsageError(f"model file not found: {ref}")
        ep = load_program(path)
        return ModelRef(ep, *example_call_of(ep))
    if ":" not in ref:
        raise UsageError(f"MODEL must be a .pt2 file or package.module:callable, got {ref!r}")
    mod_name, _, attr = ref.partition(":")
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")  # let `delegate-sdk lower mymodels:make` find modules in the working directory
    try:
        obj: Any = importlib.import_module(mod_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise UsageError(f"cannot import {ref}: {e}") from None
    try:
        made = obj()
    except Exception as e:
        raise CaptureError(f"{ref}() raised {_first_line(e)}") from e
    if isinstance(made, dict):
        unknown = set(made) - {"model", "args", "kwargs", "dynamic_shapes"}
        if "model" not in made or unknown:
            raise UsageError(f"{ref}() returned a dict: it needs 'model' and may have 'args', 'kwargs', "
                             f"'dynamic_shapes'{f' (not {sorted(unknown)})' if unknown else ''}")
        kwargs = made.get("kwargs") or {}
        if not isinstance(kwargs, dict):
            raise UsageError(f"{ref}(): 'kwargs' must be a dict of keyword arguments")
        return ModelRef(made["model"], as_args(made.get("args", ())), dict(kwargs), made.get("dynamic_shapes"))
    if not isinstance(made, tuple) or len(made) not in (2, 3):
        raise UsageError(f"{ref}() must return (module, example_inputs), (module, example_inputs, dynamic_shapes) "
                         "or a dict with model, args, kwargs, dynamic_shapes")
    return ModelRef(made[0], as_args(made[1]), {}, made[2] if len(made) == 3 else None)


def example_call_of(ep: ExportedProgram) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The example call stored with a program (positional and keyword arguments), or deterministic inputs of
    the same structure matching its signature."""
    stored = getattr(ep, "example_inputs", None)
    if isinstance(stored, tuple) and len(stored) == 2:
        return tuple(stored[0]), dict(stored[1] or {})
    from delegate_sdk.lowering import _in_spec
    from delegate_sdk.signature import input_signature, random_call

    return random_call(input_signature(ep), _in_spec(ep), 0)
