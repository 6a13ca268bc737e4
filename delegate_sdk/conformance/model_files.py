"""Whole-model conformance cases from programs a user exported (``delegate-sdk conform --model net.pt2``).

A vendor certifies on the models its customers bring, not only on the corpus: each ``.pt2`` file becomes one
``ModelCase``, judged by SQNR and bisected like the corpus's own models. Inputs are drawn as the corpus draws
them (seeded N(0, 1) for float tensors), so only programs called with float or bool tensors qualify: the valid
range of an integer input (token ids, indices) is not in the file.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from pathlib import Path

import torch

from delegate_sdk.conformance.cases import In, ModelCase, Sample
from delegate_sdk.capture import load_program
from delegate_sdk.errors import CaptureError, UsageError

__all__ = ["case_id", "file_cases"]

_DTYPES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16", torch.bool: "bool"}


def case_id(path: str | Path) -> str:
    """``model/file_<stem>``, the stem reduced to the characters a case id allows."""
    return "model/file_" + re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(path).stem)


def _program(path: str) -> torch.export.ExportedProgram:
    """Read once per process and version of the file: the case list and every lowering of it use one program."""
    st = Path(path).stat()
    return _read(path, st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=16)
def _read(path: str, mtime_ns: int, size: int) -> torch.export.ExportedProgram:
    return load_program(path)


def _load(path: str) -> torch.nn.Module:
    return _program(path).module()


def _inputs(path: Path, ep: torch.export.ExportedProgram) -> tuple[In, ...]:
    _, kwargs_spec = ep.call_spec.in_spec.children() if ep.call_spec.in_spec else (None, None)
    if kwargs_spec is not None and kwargs_spec.num_leaves:
        raise UsageError(f"--model {path}: the program takes keyword arguments; conform --model calls programs "
                         "with positional tensors only (wrap the model in a plugin's conformance_cases hook)")
    user = [s for s in ep.graph_signature.input_specs if s.kind == torch.export.graph_signature.InputKind.USER_INPUT]
    placeholders = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
    out = []
    for k, s in enumerate(user):
        val = placeholders[s.arg.name].meta.get("val") if hasattr(s.arg, "name") else None
        if not isinstance(val, torch.Tensor):
            raise UsageError(f"--model {path}: input #{k} is not a tensor; conform --model takes programs called "
                             "with tensors only")
        if val.dtype not in _DTYPES:
            raise UsageError(f"--model {path}: input #{k} is {str(val.dtype).replace('torch.', '')}, whose valid "
                             "range the file does not say; conform --model takes float or bool inputs (wrap the "
                             "model in a plugin's conformance_cases hook to give the range)")
        if any(not isinstance(d, int) for d in val.shape):
            raise UsageError(f"--model {path}: input #{k} has dynamic shape {tuple(val.shape)}; export it with "
                             "static shapes for conform --model")
        dtype = _DTYPES[val.dtype]
        out.append(In(tuple(val.shape), dtype, "bool" if dtype == "bool" else "normal"))
    if not out:
        raise UsageError(f"--model {path}: the program takes no tensor input")
    return tuple(out)


def file_cases(paths: Sequence[str | Path]) -> list[ModelCase]:
    """One ``ModelCase`` per ``.pt2`` file; UsageError naming the file for one that cannot be a case."""
    cases: list[ModelCase] = []
    seen: dict[str, Path] = {}
    for p in paths:
        path = Path(p).resolve()
        if not path.is_file():
            raise UsageError(f"--model {p}: no such file")
        try:
            ep = _program(str(path))
        except CaptureError as e:
            raise UsageError(f"--model {e}") from None
        cid = case_id(path)
        if cid in seen:
            raise UsageError(f"--model {p} and {seen[cid]} both become case {cid}: rename one")
        seen[cid] = path
        cases.append(ModelCase(cid, functools.partial(_load, str(path)), [Sample("normal", _inputs(path, ep))],
                               f"{path.name} (torch.export program given with --model)", tags=("file",)))
    return cases
