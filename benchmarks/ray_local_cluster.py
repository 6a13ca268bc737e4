"""A 2-node Ray cluster on this machine for the Ray benchmarks: a head node and one worker node, one CPU each
(two raylets, as two machines would be), stopped on exit."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def two_node_cluster() -> Iterator[tuple[str, float]]:
    """The cluster's address and how long it took to start."""
    ray_bin = str(Path(sys.executable).with_name("ray"))
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tmp = tempfile.mkdtemp(prefix="dsdk-bench-ray-")
    t0 = time.perf_counter()
    subprocess.run([ray_bin, "start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false",
                    "--disable-usage-stats", f"--temp-dir={tmp}"], check=True, capture_output=True, env=env)
    subprocess.run([ray_bin, "start", f"--address=127.0.0.1:{port}", "--num-cpus=1"], check=True,
                   capture_output=True, env=env)
    try:
        yield f"127.0.0.1:{port}", time.perf_counter() - t0
    finally:
        subprocess.run([ray_bin, "stop", "--force"], capture_output=True, env=env)
