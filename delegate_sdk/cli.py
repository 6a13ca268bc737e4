"""The ``delegate-sdk`` command."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from delegate_sdk.errors import DelegateSDKError, UsageError

console = Console()
err_console = Console(stderr=True)


class _Group(click.Group):
    """Turn SDK errors into one red line and the documented exit codes (1 failure, 2 usage)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UsageError as e:
            err_console.print(f"[red]error:[/red] {e}", highlight=False)
            sys.exit(2)
        except DelegateSDKError as e:
            err_console.print(f"[red]error:[/red] {e}", highlight=False)
            sys.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
@click.version_option(package_name="delegate-sdk")
def main(verbose: int) -> None:
    """Lower PyTorch models onto hardware delegates, inspect coverage, run and check them."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(message)s", handlers=[RichHandler(console=err_console,
                                                                                show_path=False)], force=True)
    if verbose == 0:
        import warnings

        # torch 2.13's own pytree deprecation notice fires inside torch.export on every model; it is not
        # actionable for a user of this tool (shown with -v)
        warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)


def _backends_arg(value: str) -> list[str]:
    names = [b.strip() for b in value.split(",") if b.strip()]
    if not names:
        raise click.BadParameter("give at least one backend, e.g. --backends qnn,xnnpack")
    return names


def _options(pairs: tuple[str, ...]) -> dict[str, dict[str, str]]:
    from delegate_sdk.options import parse_cli_options

    return parse_cli_options(list(pairs))


option_opt = click.option("--option", "options", multiple=True, metavar="BACKEND.KEY=VALUE",
                          help="A plugin option, e.g. --option qnn.soc_model=69 (repeatable).")
skip_ops_opt = click.option("--skip-ops", default="", metavar="OPS",
                            help="Comma-separated ops never to delegate (aten.add.Tensor or add).")
skip_nodes_opt = click.option("--skip-nodes", default="", metavar="NODES",
                              help="Comma-separated node names or module paths (encoder.layer.1) whose nodes "
                                   "stay on eager PyTorch.")
min_size_opt = click.option("--min-partition-size", default=1, show_default=True, type=click.IntRange(1),
                            help="Partitions with fewer nodes run on eager PyTorch.")
hosted_opt = click.option("--hosted-ops", is_flag=True,
                          help="Let backends that can (e.g. xnnpack: ExecuTorch's portable kernels) run ops their "
                               "accelerator cannot on their host CPU inside a partition, so that partitions merge; "
                               "such nodes are counted apart as hosted.")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def plugins(as_json: bool) -> None:
    """List installed plugins: version, precisions, available here or why not."""
    import delegate_sdk

    infos = delegate_sdk.backends()
    if as_json:
        click.echo(json.dumps([i.to_json() for i in infos], indent=2))
        return
    if not infos:
        console.print("no delegate plugins installed (pip install delegate-sdk-xnnpack, ...)")
        return
    t = Table(title="delegate-sdk plugins")
    for col in ("backend", "version", "precisions", "blob format", "available"):
        t.add_column(col)
    for i in infos:
        avail = "[green]yes[/green]" if i.available else f"[red]no[/red]: {i.unavailable_reason}"
        prec = ", ".join(f"[b]{p}[/b]" if p == i.default_precision else p for p in i.precisions)
        t.add_row(i.name, i.version, prec, f"{i.blob_format} v{i.blob_format_version}", avail)
    console.print(t)


@main.command(name="inspect")
@click.argument("model")
@click.option("--backends", "backends", required=True,
              help="Backends in priority order, e.g. qnn,xnnpack; an entry may name its precision: "
                   "xnnpack:int8,xnnpack:fp32.")
@option_opt
@skip_ops_opt
@skip_nodes_opt
@min_size_opt
@hosted_opt
@click.option("--estimate", is_flag=True, help="Also compile each partition to show the toolchain's "
                                               "cycle/memory estimate where the plugin gives one.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def inspect_cmd(model: str, backends: str, options: tuple[str, ...], skip_ops: str, skip_nodes: str,
                min_partition_size: int, hosted_ops: bool, estimate: bool, as_json: bool) -> None:
    """Show which backend would take which node of MODEL, and why not for the rest.

    MODEL is a .pt2 file (torch.export.save) or package.module:callable returning
    (module, example_inputs[, dynamic_shapes]).
    """
    import delegate_sdk.lowering as lw
    from delegate_sdk.capture import load_model_ref

    ref = load_model_ref(model)
    mod, inputs, dyn = ref
    report = lw.inspect(mod, inputs, _backends_arg(backends), options=_options(options), dynamic_shapes=dyn,
                        example_kwargs=ref.kwargs or None,
                        skip_ops=[s for s in skip_ops.split(",") if s], min_partition_size=min_partition_size,
                        skip_nodes=[s.strip() for s in skip_nodes.split(",") if s.strip()],
                        estimate=estimate, hosted_ops=hosted_ops)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
        return
    hosted = f", {report.nodes_hosted} of them hosted on a backend's CPU" if report.nodes_hosted else ""
    t = Table(title=f"{model}: {report.nodes_delegated}/{report.nodes_total} nodes delegated{hosted}")
    for col in ("partition", "backend", "nodes", "hosted", "ops", "estimate"):
        t.add_column(col)
    for p in report.partitions:
        est = ""
        if p.perf is not None:
            bits = []
            if p.perf.cycles is not None:
                bits.append(f"{p.perf.cycles:,} cycles")
            if p.perf.inference_time_s is not None:
                bits.append(f"{p.perf.inference_time_s * 1e3:.3f} ms")
            if p.perf.sram_bytes is not None:
                bits.append(f"SRAM {p.perf.sram_bytes / 1024:.1f} KiB")
            if p.perf.flash_bytes is not None:
                bits.append(f"flash {p.perf.flash_bytes / 1024:.1f} KiB")
            est = ", ".join(bits)
        t.add_row(p.id, p.backend, str(len(p.nodes)), str(len(p.hosted)), _ops_short(p.ops), est)
    console.print(t)
    fb = [n for n in report.fallback]
    if fb:
        t2 = Table(title=f"{len(fb)} node(s) on eager PyTorch")
        for col in ("node", "op", "why not"):
            t2.add_column(col)
        for n in fb:
            why = "\n".join(f"{r.backend}: [yellow]{r.code.value}[/yellow] {r.message}" for r in n.reasons)
            t2.add_row(n.node, n.op, why or "-")
        console.print(t2)
    risky: dict[tuple[str, str], list[str]] = {}
    for n in report.risky:  # one row per backend and op: the same op's nodes share its risks
        risky.setdefault((n.backend or "", n.op), []).append(n.node)
    if risky:
        t3 = Table(title=f"{len(report.risky)} delegated node(s) with a known risk (the plugin's own "
                         "conformance expectations)")
        for col in ("backend", "op", "nodes", "known to"):
            t3.add_column(col)
        for (backend, op), names in risky.items():
            risks = next(n.risks for n in report.risky if n.backend == backend and n.op == op)
            t3.add_row(backend, op, _names_short(names), "\n".join(risks))
        console.print(t3)


def _names_short(names: list[str]) -> str:
    return ", ".join(names[:4]) + (f" (+{len(names) - 4})" if len(names) > 4 else "")


def _ops_short(ops: list[str]) -> str:
    short = [o.split(".")[1] if o.count(".") >= 2 else o for o in ops]
    return ", ".join(short[:8]) + (f" (+{len(short) - 8})" if len(short) > 8 else "")


@main.command()
@click.argument("model")
@click.option("--backends", "backends", required=True,
              help="Backends in priority order, e.g. qnn,xnnpack; an entry may name its precision: "
                   "xnnpack:int8,xnnpack:fp32.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Artifact to write.")
@option_opt
@click.option("--calibration-samples", default=8, show_default=True, type=click.IntRange(1),
              help="Seeded random samples to calibrate quantized precisions with (when no --calibration file).")
@click.option("--calibration", "calibration_file", type=click.Path(exists=True, dir_okay=False),
              help="A .npz or .pt file of calibration samples (see `run --inputs`), one sample per leading index.")
@click.option("--strict", is_flag=True, help="Fail if any node would run on eager PyTorch.")
@skip_ops_opt
@skip_nodes_opt
@min_size_opt
@hosted_opt
def lower(model: str, backends: str, output: str, options: tuple[str, ...], calibration_samples: int,
          calibration_file: str | None, strict: bool, skip_ops: str, skip_nodes: str, min_partition_size: int,
          hosted_ops: bool) -> None:
    """Lower MODEL onto BACKENDS and write a single-file artifact."""
    import delegate_sdk.lowering as lw
    from delegate_sdk.capture import capture, load_model_ref
    from delegate_sdk.signature import input_signature, random_call

    ref = load_model_ref(model)
    mod, inputs, dyn = ref
    ep = capture(mod, inputs, dynamic_shapes=dyn, example_kwargs=ref.kwargs or None)
    specs, in_spec = input_signature(ep), lw._in_spec(ep)
    if calibration_file:
        tensors = _read_inputs(calibration_file)
        calib = [_call_from_tensors([x[i] for x in tensors], specs, in_spec) for i in range(len(tensors[0]))]
    else:
        calib = [random_call(specs, in_spec, seed) for seed in range(calibration_samples)]
    t0 = time.perf_counter()
    prog = lw.lower(mod, inputs, _backends_arg(backends), options=_options(options), calibration=calib,
                    dynamic_shapes=dyn, strict=strict, skip_ops=[s for s in skip_ops.split(",") if s],
                    skip_nodes=[s.strip() for s in skip_nodes.split(",") if s.strip()],
                    min_partition_size=min_partition_size, hosted_ops=hosted_ops, example_kwargs=ref.kwargs or None)
    prog.save(output)
    s = prog.summary()
    hosted = f" ({s.nodes_hosted} hosted on a backend's CPU)" if s.nodes_hosted else ""
    console.print(f"wrote {output} ({Path(output).stat().st_size / 1024:.1f} KiB) in "
                  f"{time.perf_counter() - t0:.2f} s: {s.nodes_delegated}/{s.nodes_total} nodes delegated{hosted} "
                  f"in {len(s.partitions)} partition(s)")
    _print_summary(s)


def _print_summary(s: Any) -> None:
    t = Table()
    for col in ("partition", "backend", "nodes", "hosted", "ops", "blob"):
        t.add_column(col)
    for p in s.partitions:
        t.add_row(p.id, p.backend, str(len(p.nodes)), str(len(p.hosted)), _ops_short(p.ops),
                  f"{p.format} v{p.format_version}, {p.blob_size / 1024:.1f} KiB")
    console.print(t)
    if s.fallback:
        console.print(f"{len(s.fallback)} node(s) on eager PyTorch: "
                      + ", ".join(f"{f.node} ({f.op.split('.')[1] if f.op.count('.') >= 2 else f.op})"
                                  for f in s.fallback[:12]) + (" ..." if len(s.fallback) > 12 else ""))
    for c in s.compile_failures:
        console.print(f"[yellow]{c.backend} failed to compile {len(c.nodes)} node(s), which fell back:[/yellow] "
                      f"{c.error}", highlight=False)


def _call_from_tensors(tensors: list[Any], specs: list[Any], in_spec: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """(args, kwargs) from the program's tensor inputs in order (its constant inputs filled in)."""
    from delegate_sdk.signature import unflatten_call

    it = iter(tensors)
    try:
        leaves = [s.value if s.constant else next(it) for s in specs]
    except StopIteration:
        n = sum(1 for s in specs if not s.constant)
        raise UsageError(f"the inputs file holds {len(tensors)} tensor(s); the program takes {n}") from None
    return unflatten_call(leaves, in_spec)


def _read_inputs(path: str) -> list[Any]:
    """A .npz (arrays in order, or named like the inputs) or a .pt file (tensor, tuple or list; weights_only)."""
    import numpy as np
    import torch

    p = Path(path)
    try:
        if p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                return [torch.from_numpy(np.array(z[k])) for k in z.files]
        if p.suffix in (".pt", ".pth"):
            obj = torch.load(p, weights_only=True)
            if isinstance(obj, torch.Tensor):
                return [obj]
            if isinstance(obj, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in obj):
                return list(obj)
            raise UsageError(f"{path} must hold a tensor or a tuple/list of tensors")
    except (OSError, ValueError, RuntimeError, EOFError) as e:
        raise UsageError(f"cannot read inputs from {path}: {e}") from None
    raise UsageError(f"inputs file must be .npz or .pt, got {path}")


@main.command()
@click.argument("artifact", type=click.Path(exists=True, dir_okay=False))
@click.option("--inputs", "inputs_file", type=click.Path(exists=True, dir_okay=False),
              help="A .npz (arrays in input order) or .pt file (tensor or tuple of tensors). Default: seeded random.")
@click.option("--check", "check_model", metavar="MODEL", help="Also run MODEL on eager PyTorch and compare.")
@click.option("--repeat", default=10, show_default=True, type=click.IntRange(1), help="Timed calls.")
@click.option("--seed", default=0, show_default=True, help="Seed for random inputs.")
@click.option("--per-layer", is_flag=True,
              help="With --check: each partition's error in the run and alone (fed eager PyTorch's values at its "
                   "inputs), and the modules it comes from.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def run(artifact: str, inputs_file: str | None, check_model: str | None, repeat: int, seed: int,
        per_layer: bool, as_json: bool) -> None:
    """Load ARTIFACT, run it, time it, and optionally compare with eager PyTorch."""
    import torch
    import torch.utils._pytree as pytree

    import delegate_sdk
    from delegate_sdk.metrics import compare

    if per_layer and not check_model:
        raise UsageError("--per-layer compares with eager PyTorch: give the model with --check MODEL")
    prog = delegate_sdk.load(artifact)
    if inputs_file:
        args, kwargs = _call_from_tensors(_read_inputs(inputs_file), prog.input_specs, prog._in_spec)
    else:
        args, kwargs = prog.example_call(seed)
    out = prog(*args, **kwargs)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        prog(*args, **kwargs)
        times.append(time.perf_counter() - t0)
    flat = [t for t in pytree.tree_leaves(out)]
    result: dict[str, Any] = {
        "artifact": artifact, "latency_ms": {"median": sorted(times)[len(times) // 2] * 1e3, "min": min(times) * 1e3},
        "outputs": [{"dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape)} for t in flat
                    if isinstance(t, torch.Tensor)],
    }
    if check_model:
        from delegate_sdk.capture import export, load_model_ref, model_fingerprint

        model_ref = load_model_ref(check_model)
        ref = model_ref.call(*args, **kwargs)
        result["check"] = [m.to_json() for m in compare(flat, pytree.tree_leaves(ref))]
        model_ep = None
        if prog.model_fingerprint or per_layer:
            model_ep = export(model_ref.model, model_ref.args, example_kwargs=model_ref.kwargs,
                              dynamic_shapes=model_ref.dynamic_shapes)
        if prog.model_fingerprint:
            result["same_model"] = model_fingerprint(model_ep) == prog.model_fingerprint
        if per_layer:
            from delegate_sdk.layers import partition_errors

            layers = partition_errors(prog, prog.source_of(model_ep), [(args, kwargs)])
            result["per_layer"] = layers.to_json()
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    console.print(f"{artifact}: median {result['latency_ms']['median']:.3f} ms, min "
                  f"{result['latency_ms']['min']:.3f} ms over {repeat} call(s)")
    for k, o in enumerate(result["outputs"]):
        console.print(f"  output {k}: {o['dtype']}{o['shape']}")
    if check_model:
        if result.get("same_model") is False:
            err_console.print(f"[yellow]warning:[/yellow] {check_model} is not the model {artifact} was lowered "
                              "from (its ops, input shapes or weights differ): the comparison below is between "
                              "two different models", highlight=False)
        t = Table(title=f"vs eager {check_model}")
        for col in ("output", "max abs err", "max rel err", "SQNR dB", "mismatched"):
            t.add_column(col)
        for k, m in enumerate(result["check"]):
            t.add_row(str(k), f"{m['max_abs_err']:.3g}", f"{m['max_rel_err']:.3g}",
                      "inf" if m["sqnr_db"] is None else f"{m['sqnr_db']:.1f}", m["note"] or "")
        console.print(t)
        if per_layer:
            _print_layers(layers, artifact)
            console.print("per module, and which modules to keep off the backends for an SQNR target: "
                          "delegate-sdk compare MODEL --per-layer", highlight=False)


@main.command(name="compare")
@click.argument("model")
@click.option("--backends", "backends", default="all", show_default=True,
              help="Backends to compare, each at its default precision, or 'all' (every available one).")
@click.option("--precision", "precisions", multiple=True, metavar="BACKEND=P[,P2]",
              help="Precisions to compare for a backend instead of its default (repeatable), e.g. qnn=int8,fp16.")
@click.option("--orders", default="", metavar="'A,B;C:int8,D'",
              help="Extra configurations: priority lists separated by ';', entries backend[:precision].")
@option_opt
@click.option("--calibration-samples", default=8, show_default=True, type=click.IntRange(1),
              help="Seeded random calibration inputs for quantized precisions.")
@click.option("--eval-samples", default=4, show_default=True, type=click.IntRange(1),
              help="Held-out seeded random inputs every configuration is judged on.")
@click.option("--calls", default=20, show_default=True, type=click.IntRange(1), help="Timed calls per configuration.")
@click.option("--min-sqnr", default=30.0, show_default=True, type=float,
              help="Policy: the recommendation must reach this SQNR (dB) on every output.")
@hosted_opt
@click.option("--report-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write report.json, report.md and report.html (self-contained, with charts) here.")
@click.option("--per-layer", is_flag=True,
              help="Also show where the error of the recommended configuration comes from: per partition and per "
                   "module, and which modules to keep off the backends to reach --min-sqnr.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Where configurations run: one after another here, or each as a task on a Ray cluster (pip "
                   "install 'delegate-sdk[ray]'); every row is then timed beside eager on its own worker.")
@click.option("--address", metavar="ADDR", help="The Ray cluster (e.g. ray://head:10001 or auto); default: a "
                                                "Ray instance started for this run.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0, min_open=True), metavar="S",
              help="With --executor ray: a configuration still running after S seconds is a row with that error.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of the table.")
def compare_cmd(model: str, backends: str, precisions: tuple[str, ...], orders: str, options: tuple[str, ...],
                calibration_samples: int, eval_samples: int, calls: int, min_sqnr: float, hosted_ops: bool,
                report_dir: Path | None, per_layer: bool, executor: str, address: str | None,
                timeout_s: float | None, as_json: bool) -> None:
    """Lower MODEL onto each backend (and precision, and priority order) and compare coverage, accuracy against
    eager PyTorch and latency in one table, with a recommendation.

    A configuration that fails is a row with its error. MODEL is as for `inspect`.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from delegate_sdk.capture import load_model_ref
    from delegate_sdk.comparison import Policy, compare, default_configs
    from delegate_sdk.registry import default_registry

    reg = default_registry()
    if backends.strip() == "all":
        names = [b.name for b in reg.all() if b.info().available]
    else:
        names = _backends_arg(backends)
    per: dict[str, list[str]] = {}
    for item in precisions:
        b, eq, ps = item.partition("=")
        if not eq or not b.strip() or not ps.strip():
            raise UsageError(f"--precision {item!r} must look like backend=precision[,precision]")
        per[b.strip()] = [p.strip() for p in ps.split(",") if p.strip()]
        if b.strip() not in names:
            names.append(b.strip())
    configs = default_configs(names, per, [o for o in orders.split(";") if o.strip()], registry=reg)
    ref = load_model_ref(model)
    progress = Progress(TextColumn("[bold]compare[/]"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[what]}"), TimeElapsedColumn(), console=err_console,
                        transient=True, disable=as_json or not err_console.is_terminal)
    task = progress.add_task("compare", total=len(configs), what="")

    def on_progress(label: str, done: int, total: int) -> None:
        progress.update(task, completed=done, what=label)

    with progress:
        result = compare(ref.model, ref.args, configs, example_kwargs=ref.kwargs or None,
                         dynamic_shapes=ref.dynamic_shapes, options=_options(options),
                         calibration=calibration_samples, eval_inputs=eval_samples, calls=calls,
                         policy=Policy(min_sqnr_db=min_sqnr), hosted_ops=hosted_ops, name=model,
                         on_progress=on_progress, registry=reg, per_layer=per_layer, executor=executor,
                         address=address, timeout_s=timeout_s)
    paths = result.write_reports(report_dir) if report_dir is not None else None
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
        return
    t = Table(title=f"{model}: eager {result.eager_latency_ms['median']:.2f} ms median on this host")
    for col in ("configuration", "lowered", "nodes", "MACs", "parts", "SQNR", "top-1", "latency med/p90",
                "estimate", "artifact"):
        t.add_column(col, overflow="fold")
    from delegate_sdk.comparison import _db, _estimate_text

    for r in result.results:
        if not r.ok:
            t.add_row(r.label, f"[red]failed[/red]: {r.error}", *[""] * 8)
            continue
        pick = "[bold green]" if r.label == result.recommendation.config else ""
        t.add_row(f"{pick}{r.label}", f"{r.lowering_s:.1f} s",
                  f"{r.nodes_delegated - r.nodes_hosted}/{r.nodes_total}"
                  + (f" +{r.nodes_hosted}h" if r.nodes_hosted else ""), f"{r.macs_fraction:.0%}", str(r.partitions),
                  _db(r.sqnr_db), "" if r.top1 is None else f"{r.top1:.0%}",
                  f"{r.latency_ms['median']:.2f}/{r.latency_ms['p90']:.2f} ms",
                  _estimate_text(r.estimate) if r.estimate else "", f"{r.artifact_bytes / 1024:.0f} KiB")
    console.print(t)
    for r in result.results:
        if r.ok and r.eager_latency_ms:
            console.print(f"{r.label}: timed on {r.where}, eager {r.eager_latency_ms['median']:.2f} ms there",
                          highlight=False)
    console.print(f"[bold]recommendation:[/] {result.recommendation.config or 'none'} "
                  f"({result.policy.describe()}): {result.recommendation.reason}", soft_wrap=True)
    if result.per_layer is not None:
        _print_layers(result.per_layer, result.per_layer_config)
    if paths:
        console.print(f"reports: {paths['json']}, {paths['md']}, {paths['html']}")


def _print_layers(rep: Any, config: str) -> None:
    from delegate_sdk.comparison import _db

    t = Table(title=f"{config}: where the error comes from (model output {_db(rep.sqnr_db)})")
    for col in ("partition", "backend", "nodes", "modules", "SQNR in the run", "SQNR alone"):
        t.add_column(col, overflow="fold")
    for p in rep.partitions:
        t.add_row(p.partition, p.backend, str(p.nodes), ", ".join(p.modules), _db(p.sqnr_db), _db(p.local_sqnr_db))
    console.print(t)
    if rep.modules:
        t2 = Table(title="per module (partitions cut where modules meet), worst first")
        for col in ("module", "delegated nodes", "SQNR alone"):
            t2.add_column(col)
        for m in rep.modules:
            t2.add_row(m.module, str(m.nodes), _db(m.local_sqnr_db))
        console.print(t2)
    if rep.target_db is not None and rep.skip:
        console.print(f"to reach {rep.target_db:g} dB keep {', '.join(rep.skip)} off the backends "
                      f"(--skip-nodes {','.join(rep.skip)}): {_db(rep.skip_sqnr_db)}"
                      + ("" if rep.target_met else " [yellow](not enough)[/yellow]"), soft_wrap=True)


@main.command(name="new-plugin")
@click.argument("name")
@click.option("--dir", "directory", default=".", show_default=True, type=click.Path(file_okay=False),
              help="Where to create the plugin's folder (NAME/ inside it).")
def new_plugin_cmd(name: str, directory: str) -> None:
    """Write a new out-of-tree plugin package NAME that passes conformance as written: a claim table, an
    ONNX compiler, an ONNX Runtime CPU runtime, tests using the plugin kit, expectations and a README."""
    from delegate_sdk.scaffold import new_plugin

    made = new_plugin(name, directory)
    console.print(f"wrote {len(made.files)} files to {made.root}", highlight=False)
    console.print("next:\n"
                  f"  pip install -e {made.root}\n"
                  f"  delegate-sdk conform --plugin {name}\n"
                  f"  pytest {made.root}\n"
                  "guide: docs/writing-a-plugin.md", highlight=False)


def _mount_conform() -> None:
    try:
        from delegate_sdk.conformance.command import conform
    except ImportError:  # the conformance engine is optional while it is being built
        return
    main.add_command(conform)


_mount_conform()

if __name__ == "__main__":
    main()
