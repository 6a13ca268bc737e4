"""init / execute / destroy: run a compiled blob (an ExecuTorch program) with the ExecuTorch runtime.

The XNNPACK backend registered in the runtime executes the delegate; the
program holds nothing else (preprocess checks that), so no portable kernel runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch

from delegate_sdk_xnnpack._toolchain import quiet, runtime_module

log = logging.getLogger(__name__)

XNNPACK_BACKEND = "XnnpackBackend"


@dataclass
class Handle:
    """One loaded program. ``blob`` is kept alive here: the runtime reads the program from that buffer."""

    blob: bytes
    program: Any
    method: Any
    n_outputs: int
    meta: dict[str, Any] = field(default_factory=dict)


def backend_status() -> tuple[bool, str]:
    """(available, reason) from the ExecuTorch runtime itself."""
    try:
        rt = runtime_module()
    except Exception as e:  # not installed, or a broken native extension
        return False, (f"the ExecuTorch runtime cannot be imported ({type(e).__name__}: {e}); "
                       "pip install executorch==1.5.1")
    try:
        names = list(rt._get_registered_backend_names())
    except Exception as e:
        return False, f"the ExecuTorch runtime cannot list its backends: {type(e).__name__}: {e}"
    if XNNPACK_BACKEND not in names:
        return False, (f"this ExecuTorch runtime has no {XNNPACK_BACKEND} registered (it has: "
                       f"{', '.join(names) or 'none'}); install an executorch build with XNNPACK")
    return True, ""


def set_threads(num_threads: int) -> None:
    """Resize ExecuTorch's (process-wide) threadpool; 0 leaves it as it is."""
    if num_threads <= 0:
        return
    rt = runtime_module()
    if rt._threadpool_get_thread_count() != num_threads:
        with quiet("xnnpack threadpool"):
            rt._unsafe_reset_threadpool(int(num_threads))
        log.debug("xnnpack: ExecuTorch threadpool now has %d threads", rt._threadpool_get_thread_count())


def load(blob: bytes, meta: dict[str, Any], options: dict[str, Any]) -> Handle:
    rt = runtime_module()
    set_threads(int(options.get("num_threads", 0) or 0))
    data = bytes(blob)
    try:
        with quiet("xnnpack program load"):
            program = rt._load_program_from_buffer(data, program_verification=rt.Verification.InternalConsistency)
            method = program.load_method("forward")
    except Exception as e:
        raise RuntimeError(f"xnnpack: the ExecuTorch runtime could not load the program: {type(e).__name__}: {e}") from e
    n_out = int(meta.get("n_outputs", -1))
    return Handle(blob=data, program=program, method=method, n_outputs=n_out, meta=dict(meta))


def run(handle: Handle, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    args = []
    for t in inputs:
        if t.requires_grad:  # autograd history is not the runtime's business
            t = t.detach()
        if not t.is_contiguous():  # the runtime reads dense buffers in the declared dim order
            t = t.contiguous()
        args.append(t)
    try:
        outs = handle.method(args)
    except Exception as e:
        raise RuntimeError(f"xnnpack: ExecuTorch execution failed: {type(e).__name__}: {e}") from e
    # clone_outputs=True (the default) already copied them out of the runtime's arenas
    return outs if isinstance(outs, list) else list(outs)


def release(handle: Handle) -> None:
    handle.method = None
    handle.program = None
