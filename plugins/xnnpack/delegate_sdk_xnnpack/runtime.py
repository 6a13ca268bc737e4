"""init / execute / destroy: run a compiled blob (an ExecuTorch program) with the ExecuTorch runtime.

The XNNPACK backend registered in the runtime executes the delegate; the
program holds nothing else (preprocess checks that), so no portable kernel runs
unless the partition has hosted ops. A v2 blob keeps its weights in the
``weights.ptd`` section (an ExecuTorch data map), loaded beside the program.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch

from delegate_sdk_xnnpack._toolchain import quiet, runtime_module

log = logging.getLogger(__name__)

XNNPACK_BACKEND = "XnnpackBackend"
#: the section holding a blob's constants (ExecuTorch's external data map)
WEIGHTS_SECTION = "weights.ptd"


@dataclass
class Handle:
    """One loaded program. ``blob`` is kept alive here: the runtime reads the program from that buffer."""

    blob: bytes
    weights: bytes | None
    module: Any
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


def load_module(pte: bytes, weights: bytes | None) -> Any:
    """The ExecuTorch module for a program and its data map; both buffers must outlive it."""
    rt = runtime_module()
    return rt._load_for_executorch_from_buffer(pte, data_map_buffer=weights,
                                               program_verification=rt.Verification.InternalConsistency)


def load(blob: bytes, meta: dict[str, Any], options: dict[str, Any], sections: dict[str, bytes]) -> Handle:
    set_threads(int(options.get("num_threads", 0) or 0))
    data = bytes(blob)
    missing = [name for name in meta.get("sections", []) if name not in sections]
    if missing:
        # the program references data it does not hold: ExecuTorch would crash on it, not raise
        raise RuntimeError(f"xnnpack: the blob's section(s) {missing} were not given to init; the artifact is "
                           "incomplete (re-lower the model)")
    weights = sections.get(WEIGHTS_SECTION)
    try:
        with quiet("xnnpack program load"):
            module = load_module(data, weights)
    except Exception as e:
        raise RuntimeError(f"xnnpack: the ExecuTorch runtime could not load the program: {type(e).__name__}: {e}") from e
    n_out = int(meta.get("n_outputs", -1))
    return Handle(blob=data, weights=weights, module=module, method=module.forward, n_outputs=n_out,
                  meta=dict(meta))


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
    handle.module = None
