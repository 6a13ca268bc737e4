"""Connecting to a Ray cluster (or starting a Ray instance here) for ``--executor ray``.

Shared by conformance (:mod:`delegate_sdk.conformance.ray_pool`) and ``compare``
(:mod:`delegate_sdk.comparison_ray`), so both reach a cluster the same way and forward the same environment.
"""

from __future__ import annotations

import os
from typing import Any

from delegate_sdk.errors import UsageError

#: environment variables a Ray worker needs to see what the caller sees (plugins registered by environment,
#: in-tree packages, the contributed corpus, thread limits)
FORWARDED_ENV = ("DELEGATE_SDK_PLUGINS", "PYTHONPATH", "DELEGATE_SDK_CORPUS", "OPENBLAS_NUM_THREADS",
                 "OMP_NUM_THREADS")


def connect(address: str | None) -> tuple[Any, bool]:
    """The ``ray`` module, initialised on the cluster at ``address`` (None: a Ray instance on this machine),
    and whether this call started it (then the caller shuts it down when done)."""
    try:
        import ray
    except ImportError:
        raise UsageError("--executor ray needs Ray: pip install 'delegate-sdk[ray]'") from None
    if ray.is_initialized():
        return ray, False
    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                 runtime_env={"env_vars": env} if env else None)
    except ConnectionError as e:
        raise UsageError(f"cannot reach the Ray cluster at {address!r}: {e}") from None
    return ray, True


def where() -> str:
    """This Ray worker's node, as reports name it."""
    import socket

    import ray

    return f"ray node {ray.get_runtime_context().get_node_id()[:8]} ({socket.gethostname()})"
