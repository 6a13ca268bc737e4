"""``compare --executor ray``: each configuration lowered, run and timed as one Ray task.

The caller exports the model once and ships the exported program (``torch.export.save``), the calibration and
held-out inputs and eager PyTorch's outputs on them; a worker needs ``delegate-sdk`` and the plugins of the
configurations it runs, with their toolchains, and nothing of the caller's code (the model's Python class is
not needed to lower an exported program). Each task returns its row and the saved artifact, which
``ConfigResult.program`` loads here on first use.

Latency is measured on the worker, so each row also carries eager PyTorch's latency on that worker, timed in
the same task (``ConfigResult.eager_latency_ms``): a row's latency is comparable with its own baseline even
when the nodes differ. That baseline runs the model itself when it unpickles on the worker (its class
importable there), else the exported program's module, which costs ~0.1 ms more per call (said in the row).

A configuration whose worker dies (a segfault in a vendor runtime: on one machine it would end the whole
comparison) or that runs past ``timeout_s`` is a row with that error; the other rows are unaffected. The timeout
counts from when the task starts on its worker (the task's first item says so), not from its submission: a
busy node's worker start-up is not the configuration's time.
"""

from __future__ import annotations

import importlib
import io
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from delegate_sdk.comparison import Config, ConfigResult, _latency, _one_line, _run_config
from delegate_sdk.errors import UsageError
from delegate_sdk.ray_cluster import connect


def run_configs(cfgs: Sequence[Config], exported: Any, model: Any, *, options: dict[str, dict[str, Any]] | None,
                calib: list[Any], evals: list[Any], refs: list[Any], out_paths: list[str], calls: int,
                hosted_ops: bool, address: str | None, timeout_s: float | None = None,
                on_progress: Callable[[str, int, int], None] | None = None) -> list[ConfigResult]:
    """One :class:`ConfigResult` per configuration, in the order given, each computed by a Ray task."""
    buf = io.BytesIO()
    try:
        torch.export.save(exported, buf)
    except Exception as e:
        raise UsageError(f"--executor ray ships the exported program to the workers, and torch.export.save "
                         f"could not serialise it: {_one_line(e)}") from e
    ray, started_here = connect(address)
    try:
        try:
            model_bytes: bytes | None = ray.cloudpickle.dumps(model)
        except Exception:  # the baseline then runs the exported program instead
            model_bytes = None
        # a generator task: its first item says it has started, so that worker start-up (a new Python
        # importing torch and the plugins: seconds on a busy node) never counts against the timeout
        task = ray.remote(num_cpus=1, max_retries=0)(_remote_config)
        blob = ray.put(buf.getvalue())
        inputs = ray.put((calib, evals, refs, model_bytes, _pytree_modules(exported)))
        # no more tasks in flight than the cluster has CPUs, so that a task starts soon after it is submitted
        slots = max(1, int(ray.cluster_resources().get("CPU", 1)))
        queue = list(range(len(cfgs)))
        running: dict[Any, tuple[int, float | None]] = {}  # generator -> (configuration, when it started)
        results: list[ConfigResult | None] = [None] * len(cfgs)
        if on_progress:
            on_progress(f"{len(cfgs)} configurations on {slots} Ray worker slot(s)", 0, len(cfgs))
        while queue or running:
            while queue and len(running) < slots:
                k = queue.pop(0)
                running[task.remote(cfgs[k], blob, inputs, out_paths, calls, options, hosted_ops)] = (k, None)
            ready, _ = ray.wait(list(running), num_returns=1, timeout=_wait_s(running, timeout_s))
            for gen in ready:
                k, _ = running.pop(gen)
                try:
                    item = ray.get(next(gen))
                except StopIteration:  # cannot happen unless the task body changes: say so rather than hang
                    results[k] = ConfigResult(cfgs[k], error="the Ray task ended without a result")
                except ray.exceptions.RayTaskError as e:  # the task raised (outside what _run_config catches)
                    cause = e.cause if isinstance(e.cause, BaseException) else e
                    results[k] = ConfigResult(cfgs[k], error=f"failed on the Ray worker: {_one_line(cause)}")
                except Exception as e:  # the task's worker died, or its node: the row says so
                    results[k] = ConfigResult(cfgs[k], error=f"the Ray worker running it died ({_ray_error(e)})")
                else:
                    if isinstance(item, ConfigResult):
                        results[k] = item
                        if on_progress:
                            on_progress(cfgs[k].label, sum(r is not None for r in results), len(cfgs))
                    else:
                        running[gen] = (k, time.monotonic())
            now = time.monotonic()
            for gen, (k, started) in list(running.items()):
                if timeout_s is not None and started is not None and now - started >= timeout_s:
                    ray.cancel(gen, force=True)
                    del running[gen]
                    results[k] = ConfigResult(cfgs[k], error=f"still running after {timeout_s:g} s on a Ray "
                                                             f"worker: stopped (--timeout)")
        return [r for r in results if r is not None]
    finally:
        if started_here:
            ray.shutdown()


def _wait_s(running: dict[Any, tuple[int, float | None]], timeout_s: float | None) -> float | None:
    """How long to wait for the next item: until the first started task's deadline (None: no deadline)."""
    starts = [t0 for _, t0 in running.values() if t0 is not None]
    if timeout_s is None or not starts:
        return None  # a task that starts is itself a ready item
    return max(0.0, min(starts) + timeout_s - time.monotonic())


def _remote_config(cfg: Config, blob: bytes,
                   inputs: tuple[list[Any], list[Any], list[Any], bytes | None, list[str]], out_paths: list[str],
                   calls: int, options: dict[str, dict[str, Any]] | None, hosted_ops: bool) -> Iterator[Any]:
    """The task: says it has started, then lowers, saves, runs and times one configuration on this worker,
    eager's latency beside it, and yields that row."""
    yield "started"
    from delegate_sdk.lowering import lower
    from delegate_sdk.ray_cluster import where
    from delegate_sdk.registry import default_registry

    calib, evals, refs, model_bytes, modules = inputs
    for name in modules:  # the pytree types of the model's inputs and outputs register when imported
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise UsageError(f"the model's inputs or outputs are types of {name!r}, which does not import on this "
                             f"Ray worker ({_one_line(e)}): install it on every node") from e
    ep = torch.export.load(io.BytesIO(blob))
    res = _run_config(cfg, ep, options, calib, evals, refs, out_paths, calls, hosted_ops, default_registry(), lower,
                      keep_artifact=True)
    res.where = where()
    if res.ok:
        eager, res.eager_baseline = _eager_model(model_bytes, ep)
        res.eager_latency_ms = _latency(lambda: eager(*evals[0][0], **evals[0][1]), calls)
    prog, res.program = res.program, None  # a live program stays here; the artifact travels
    if prog is not None:
        prog.close()
    yield res


def _pytree_modules(ep: Any) -> list[str]:
    """Modules defining the non-builtin pytree node types of ``ep``'s inputs and outputs (e.g. transformers'
    ``ModelOutput`` classes): ``torch.export.load`` needs them registered, which importing them does."""
    out: set[str] = set()
    todo = [ep.call_spec.in_spec, ep.call_spec.out_spec]
    while todo:
        spec = todo.pop()
        if spec is None:
            continue
        mod = getattr(spec.type, "__module__", "builtins") if spec.type is not None else "builtins"
        if mod not in ("builtins", "collections") and not mod.startswith("torch"):
            out.add(mod)
        todo.extend(spec.children())
    return sorted(out)


def _eager_model(model_bytes: bytes | None, ep: Any) -> tuple[Any, str]:
    if model_bytes is not None:
        import pickle

        try:
            model = pickle.loads(model_bytes)
            if isinstance(model, torch.nn.Module):
                return model.eval(), "the model"
        except Exception:  # its class is not importable on this worker
            pass
    return ep.module(), "the exported program (the model did not unpickle on the worker)"


def _ray_error(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:300]}"
