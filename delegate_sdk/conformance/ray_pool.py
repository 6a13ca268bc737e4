"""Conformance workers on a Ray cluster: ``delegate-sdk conform --executor ray [--address ADDR]``.

Each worker slot is a small Ray actor (one CPU) that starts the ordinary conformance worker process on its
node (:class:`delegate_sdk.conformance.scheduler.WorkerProcess`) and relays its messages; the scheduler is the
same one that drives local workers. So a vendor runtime that segfaults kills only that worker process: the
actor reports its exit status, its last output and the Python stack faulthandler wrote, and the scheduler
reports CRASH and requeues the rest of the unit, exactly as on one machine; a hung step is dumped and killed
through the actor and reported TIMEOUT. If the actor itself (or its node) dies, the step is reported CRASH
naming the Ray worker.

A node needs what a local worker needs and nothing of the caller's checkout: Python with ``delegate-sdk``,
the plugin under test and its vendor runtime/toolchain installed (``pip install "delegate-sdk[ray]"
delegate-sdk-<plugin>``). The environment variables conformance reads (``DELEGATE_SDK_PLUGINS``,
``PYTHONPATH``, ``DELEGATE_SDK_CORPUS``) are forwarded to the actors, which is how tests and in-tree plugins
reach a local cluster.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Sequence
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from delegate_sdk.conformance.scheduler import Worker, WorkerPool, WorkerProcess
from delegate_sdk.ray_cluster import connect
#: how long one poll of an actor waits for its worker's messages (the scheduler waits on all polls at once)
POLL_S = 1.0
#: worker messages that end a poll at once: the scheduler hands out the next unit or records a failure on them
_ACT_ON = frozenset({"ready", "done", "error", "fatal"})


class _Relay:
    """The actor's body: one worker process on this node, its messages relayed to the scheduler."""

    def __init__(self, cfg: dict[str, Any]):
        self.tmp = tempfile.mkdtemp(prefix="dsdk-ray-worker-")
        # no PR_SET_PDEATHSIG here: it fires when the *thread* that started the worker ends, and Ray runs actor
        # code on threads of its own; a worker whose actor is gone sees its connection close and exits
        self.process = WorkerProcess({**cfg, "tmpdir": self.tmp, "die_with_parent": False},
                                     Path(self.tmp) / "worker.log")

    def where(self) -> str:
        from delegate_sdk.ray_cluster import where

        return where()

    # control group: one at a time, in the order the scheduler sent them
    def send(self, msg: Any) -> None:
        if msg[0] == "unit":
            self.process.mark_step()
        self.process.conn.send(msg)

    def stack(self) -> list[str]:
        return self.process.stack()

    def startup_output(self) -> str:
        return self.process.startup_output()

    def dump_stack(self) -> None:
        self.process.dump_stack()

    def stop(self) -> None:
        self.process.stop()

    def kill(self) -> None:
        self.process.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # poll group
    def poll(self, timeout: float) -> tuple[list[Any], bool, str]:
        """The worker's messages within ``timeout`` s, whether it is gone, and if so why.

        Returns early only on a message the scheduler must act on (ready, a unit done, an error): each poll is
        a round trip through Ray, and one per step and result made Ray conformance ~25% slower than local
        workers on 2 cores. A step's start arrives up to ``timeout`` s late, which only makes --timeout that
        much more lenient."""
        deadline = time.monotonic() + timeout
        msgs: list[Any] = []
        gone = False
        while not gone:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                wait([self.process.conn], timeout=left)
            except OSError:
                pass
            new, gone = self.process.messages()  # marks where each step's output starts in the worker's log
            msgs += new
            if any(m[0] in _ACT_ON for m in new):
                break
        return msgs, gone, self.process.death() if gone else ""


class _RayWorker(Worker):
    def __init__(self, ray: Any, actor: Any):
        super().__init__("ray")
        self._ray = ray
        self.actor = actor
        self.pending: Any = None
        self.gone_why = ""
        self._where_ref = actor.where.remote()

    @property  # type: ignore[override]
    def where(self) -> str:
        if self._where_ref is not None:
            name = self._get(self._where_ref, timeout=5.0)
            if name:
                self._where, self._where_ref = name, None
        return getattr(self, "_where", "ray")

    @where.setter
    def where(self, value: str) -> None:
        self._where = value

    def send(self, msg: Any) -> None:
        self.actor.send.remote(msg)

    def mark_step(self) -> None:
        pass  # the actor marks its worker's log itself, on the messages it relays

    def _get(self, ref: Any, timeout: float = 30.0, default: Any = None) -> Any:
        try:
            return self._ray.get(ref, timeout=timeout)
        except Exception:  # the actor is gone or unreachable: nothing more to learn from it
            return default

    def death(self) -> str:
        return self.gone_why or "the Ray worker died"

    def stack(self) -> list[str]:
        return self._get(self.actor.stack.remote(), default=[])

    def startup_output(self) -> str:
        return self._get(self.actor.startup_output.remote(), default="")

    def dump_stack(self) -> None:
        self._get(self.actor.dump_stack.remote(), timeout=15.0)

    def stop(self) -> None:
        self.actor.stop.remote()

    def kill(self) -> None:
        self._get(self.actor.kill.remote(), timeout=15.0)
        try:
            self._ray.kill(self.actor)
        except Exception:
            pass


class RayPool(WorkerPool):
    """Workers as Ray actors: on the cluster at ``address``, or on a Ray instance started here."""

    kind = "ray"

    def __init__(self, address: str | None = None):
        self._ray, self._started_here = connect(address)
        ray = self._ray
        self.address = address
        # control calls run in the default group (one at a time, in order); polls in their own group, so that a
        # poll waiting for the worker never holds up a unit being sent
        self._actor_cls = ray.remote(num_cpus=1, concurrency_groups={"poll": 1})(_Relay)

    def slots(self, requested: int | None) -> int:
        if requested:
            return requested
        return max(1, int(self._ray.cluster_resources().get("CPU", 1)))

    def spawn(self, cfg: dict[str, Any]) -> Worker:
        return _RayWorker(self._ray, self._actor_cls.remote(cfg))

    def wait(self, workers: Sequence[Worker], timeout: float) -> list[tuple[Worker, list[Any], bool]]:
        ray = self._ray
        mine = [w for w in workers if isinstance(w, _RayWorker)]
        for w in mine:
            if w.pending is None:
                w.pending = w.actor.poll.options(concurrency_group="poll").remote(min(POLL_S, timeout))
        by_ref = {w.pending: w for w in mine}
        ready, _ = ray.wait(list(by_ref), num_returns=1, timeout=timeout)
        if ready:
            ready, _ = ray.wait(list(by_ref), num_returns=len(by_ref), timeout=0)
        out = []
        for ref in ready:
            w = by_ref[ref]
            w.pending = None
            try:
                msgs, gone, why = ray.get(ref)
            except Exception as e:  # the actor (or its node) died
                why = f"the Ray worker died ({type(e).__name__}: {' '.join(str(e).split())[:200]})"
                msgs, gone = [], True
            w.gone_why = why
            if msgs or gone:
                out.append((w, msgs, gone))
        return out

    def describe(self) -> dict[str, Any]:
        res = self._ray.cluster_resources()
        return {"kind": self.kind, "address": self.address or "local Ray instance",
                "nodes": len([n for n in self._ray.nodes() if n.get("Alive")]), "cpus": int(res.get("CPU", 0))}

    def close(self) -> None:
        if self._started_here:
            self._ray.shutdown()
