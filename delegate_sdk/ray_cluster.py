"""Connecting to a Ray cluster (or starting a Ray instance here) for ``--executor ray``.

Shared by conformance (:mod:`delegate_sdk.conformance.ray_pool`) and ``compare``
(:mod:`delegate_sdk.comparison_ray`), so both reach a cluster the same way and forward the same environment.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

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
        hint = ""
        if address not in (None, "auto") and os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
            # Ray connects to an explicit address without its token unless told to, and then only retries
            hint = ("; if the cluster uses token authentication (`ray start` makes one whenever ~/.ray/auth_token "
                    "exists), set RAY_AUTH_MODE=token and give the token (RAY_AUTH_TOKEN or ~/.ray/auth_token)")
        raise UsageError(f"cannot reach the Ray cluster at {address!r}: {e}{hint}") from None
    return ray, True


def where() -> str:
    """This Ray worker's node, as reports name it."""
    import socket

    import ray

    return f"ray node {ray.get_runtime_context().get_node_id()[:8]} ({socket.gethostname()})"


@contextmanager
def local_cluster(nodes: int = 1, cpus_per_node: int = 2, temp_dir: str | None = None,
                  startup_timeout: float = 300.0) -> Iterator[str]:
    """A Ray cluster of ``nodes`` raylets on this machine, as ``ray start`` makes one; yields its address.

    For tests and benchmarks: each node runs ``ray start --block`` in its own process group, and leaving the
    block stops exactly those processes. (``ray stop`` would stop every Ray process on the machine, other
    clusters included, such as a parallel test worker's.) The nodes listen on the loopback address only and
    without token authentication: Ray turns it on for ``ray start`` whenever ``~/.ray/auth_token`` exists
    (any earlier local ``ray.init()`` writes one), and a client given an explicit address then cannot connect.
    """
    ray_bin = str(Path(sys.executable).with_name("ray"))
    if not Path(ray_bin).exists():
        raise UsageError("a local Ray cluster needs Ray: pip install 'delegate-sdk[ray]'")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tmp = temp_dir or tempfile.mkdtemp(prefix="dsdk-ray-")
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled")
    common = [f"--num-cpus={cpus_per_node}", "--node-ip-address=127.0.0.1", "--disable-usage-stats", "--block"]
    commands = [[ray_bin, "start", "--head", f"--port={port}", "--include-dashboard=false",
                 f"--temp-dir={tmp}", *common]]
    commands += [[ray_bin, "start", f"--address=127.0.0.1:{port}", *common] for _ in range(nodes - 1)]
    procs: list[subprocess.Popen] = []
    try:
        for cmd in commands:
            log = open(Path(tmp) / f"ray-start-{len(procs)}.log", "w+")
            procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                          start_new_session=True))
            _wait_for_block(procs[-1], log, startup_timeout)
        yield f"127.0.0.1:{port}"
    finally:
        for p in reversed(procs):  # SIGTERM: ``ray start --block`` shuts its node down
            if p.poll() is None:
                p.terminate()
        for p in reversed(procs):
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
            try:  # whatever the node left behind (its raylet's workers) is in its process group
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if temp_dir is None:
            shutil.rmtree(tmp, ignore_errors=True)


def _wait_for_block(proc: subprocess.Popen, log: IO[str], timeout: float) -> None:
    """Until ``ray start --block`` says its node is up (it then blocks), or a clear error if it exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log.seek(0)
        text = log.read()
        if "will now block" in text:
            return
        if proc.poll() is not None:
            raise UsageError(f"ray start exited with {proc.returncode}: {' '.join(text.split()[-60:])}")
        time.sleep(0.2)
    raise UsageError(f"ray start did not bring its node up within {timeout:.0f} s")
