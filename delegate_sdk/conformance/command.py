"""The ``delegate-sdk conform`` command (a click command the CLI group mounts)."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import click

from delegate_sdk.conformance.expectations import OUTCOMES, is_unexpected

_STYLE = {"PASS": "green", "PASS_PARTIAL": "green", "XFAIL": "yellow", "XPASS": "magenta", "SKIP": "dim",
          "NOT_CLAIMED": "dim", "CRASH": "bold red", "TIMEOUT": "bold red"}


@click.command("conform")
@click.option("--plugin", required=True, metavar="NAME", help="Backend whose plugin is tested.")
@click.option("--precision", metavar="P", help="Precision to lower at (default: the plugin's default).")
@click.option("--option", "option_values", multiple=True, metavar="NAME.KEY=VALUE",
              help="Plugin option, as for `lower` (repeatable), e.g. arm_ethos.target=ethos-u85-256.")
@click.option("--suite", type=click.Choice(["ops", "models", "all", "zoo"]), default="all", show_default=True,
              help="ops, models, or both (all); zoo: real architectures from transformers (pip install "
                   "'delegate-sdk[zoo]'), not part of all.")
@click.option("--model", "models", multiple=True, type=click.Path(dir_okay=False, path_type=Path), metavar="FILE.pt2",
              help="Also certify on this exported program (torch.export.save), a whole-model case judged by SQNR "
                   "and bisected when it fails: case model/file_<name> (repeatable; -k model/file runs only "
                   "these).")
@click.option("-k", "pattern", metavar="REGEX", help="Only samples whose id matches (re.search), e.g. 'op/conv'.")
@click.option("--jobs", type=click.IntRange(min=1), default=None, help="Worker processes [default: core count].")
@click.option("--report-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write report.json, report.md and junit.xml here.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of all inputs and weights.")
@click.option("--shard", metavar="I/N", help="Run only the I-th of N deterministic slices of the cases (1-based).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=300.0, show_default=True,
              help="Seconds allowed for each step (lowering a case, running a sample) before TIMEOUT.")
@click.option("--strict", is_flag=True, help="XPASS counts as an unexpected result.")
@click.option("--expectations", "expectations_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Use this expectations.toml instead of the plugin's own.")
@click.option("--no-bisect", is_flag=True, help="Do not bisect failing model cases.")
@click.option("--min-pass", type=click.IntRange(min=0), default=1, show_default=True,
              help="Fail unless at least this many samples pass.")
@click.option("--min-ops", type=click.IntRange(min=0), default=0, show_default=True,
              help="Fail unless at least this many distinct ops pass every claimed sample fully delegated.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Where the workers run: local processes (--jobs of them), or a Ray cluster (pip install "
                   "'delegate-sdk[ray]'; --jobs defaults to the cluster's CPUs).")
@click.option("--address", metavar="ADDR", help="The Ray cluster (e.g. ray://head:10001 or auto); default: a "
                                                "Ray instance started for this run.")
@click.option("--hosted-ops", is_flag=True,
              help="Let the plugin run ops its accelerator cannot on its host CPU inside partitions (a lowering "
                   "option, off by default: conformance certifies the accelerator); hosted nodes never count as a "
                   "full pass.")
@click.option("--skip-runtime-checks", is_flag=True,
              help="Skip the runtime contract checks (second call, input mutation, threads, more sizes, fresh "
                   "process): faster numerics iteration, never a certificate (exits 1).")
def conform(plugin: str, precision: str | None, option_values: tuple[str, ...], suite: str, pattern: str | None,
            jobs: int | None, report_dir: Path | None, seed: int, shard: str | None, timeout: float, strict: bool,
            expectations_path: Path | None, no_bisect: bool, min_pass: int, min_ops: int, executor: str,
            address: str | None, hosted_ops: bool, skip_runtime_checks: bool, models: tuple[Path, ...]) -> None:
    """Check that a plugin is faithful to eager PyTorch and keeps the runtime contract.

    Runs the op and model corpus (plus the plugin's own cases) through lower -> save -> load -> run in
    isolated worker processes and compares with eager PyTorch; checks that inputs are never modified,
    outputs never reused across calls, thread safety when declared, dynamic programs at several sizes, and
    that the artifact runs in a fresh process. Exits 0 iff there is no unexpected result and the run
    certifies something (the plugin took part, --min-pass / --min-ops met); 1 otherwise; 2 for bad usage.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from delegate_sdk.conformance.engine import parse_option_args, run_conformance
    from delegate_sdk.conformance.report import write_all
    from delegate_sdk.errors import DelegateSDKError, UsageError
    from delegate_sdk.registry import default_registry

    console = Console(highlight=False)
    backend = default_registry().get(plugin)  # UsageError (exit 2) for an unknown plugin or a bad option
    options = parse_option_args(option_values, plugin, backend.info())

    counts: Counter[str] = Counter()
    progress = Progress(TextColumn("[bold]conform[/] {task.fields[plugin]}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=console,
                        transient=False, disable=not console.is_terminal and not _force_progress())
    task = progress.add_task("conform", total=None, plugin=plugin, status="")

    def on_plan(units: list) -> None:
        progress.update(task, total=sum(len(u.sample_ids) for u in units))

    def on_result(r) -> None:  # type: ignore[no-untyped-def]
        counts[r.outcome] += 1
        bad = sum(n for o, n in counts.items() if is_unexpected(o, strict))
        progress.update(task, advance=1, status=f"{counts['PASS'] + counts['PASS_PARTIAL']} ok, {bad} unexpected")

    try:
        with progress:
            report = run_conformance(plugin, precision=precision, options=options, suite=suite, pattern=pattern,
                                     jobs=jobs, seed=seed, shard=shard, timeout=timeout, strict=strict,
                                     expectations=expectations_path, bisect=not no_bisect, min_pass=min_pass,
                                     min_ops=min_ops, runtime_checks=not skip_runtime_checks, executor=executor,
                                     address=address, hosted_ops=hosted_ops, models=models, on_plan=on_plan,
                                     on_result=on_result)
    except DelegateSDKError:
        raise  # the CLI group prints it as one line (exit 2 for usage errors, 1 otherwise)
    except ValueError as e:
        raise UsageError(str(e)) from None
    except Exception as e:  # RunAborted and friends
        raise click.ClickException(f"{type(e).__name__}: {e}") from None

    console.print(f"[bold]{plugin}[/] {report.plugin.get('version')} at {report.precision}: "
                  f"{len(report.cases)} samples in {report.duration_s:.1f} s (seed {report.seed})")
    if report.executor.get("kind") == "ray":
        for place, st in sorted(report.executor.get("where", {}).items()):
            console.print(f"  {place}: {st['workers']} worker(s), {st['units']} units, {st['busy_s']:.0f} s busy",
                          soft_wrap=True)
    summary = Table(title="outcomes")
    summary.add_column("outcome")
    summary.add_column("count", justify="right")
    by = report.by_outcome()
    for o in OUTCOMES:
        if by.get(o):
            summary.add_row(f"[{_STYLE.get(o, 'red')}]{o}[/]", str(by[o]))
    console.print(summary)
    console.print(f"{len(report.ops_passed())} distinct ops pass every claimed sample fully delegated; "
                  f"{len(report.ops_some_fail())} have claimed samples that fail (expected or not)", soft_wrap=True)
    if report.expectations:
        e = report.expectations
        console.print(f"expectations: {e.source}, {e.entries} entries, sha256 {e.sha256[:16]}")
    unexpected = report.unexpected()
    if unexpected:
        t = Table(title=f"unexpected results ({len(unexpected)})", show_lines=False)
        t.add_column("case", overflow="fold")
        t.add_column("outcome")
        t.add_column("detail", overflow="fold")
        for r in unexpected:
            where = f" [stage {r.stage}]" if r.stage and r.outcome in ("CRASH", "TIMEOUT") else ""
            t.add_row(r.id, f"[{_STYLE.get(r.outcome, 'red')}]{r.outcome}[/]", r.detail + where)
        console.print(t)
        console.print(f"rerun one: {unexpected[0].repro}", soft_wrap=True)
    else:
        console.print("[green]no unexpected results[/]")
    for problem in report.problems():
        console.print(f"[red]not certified:[/] {problem}", soft_wrap=True)
    if report_dir is not None:
        paths = write_all(report, report_dir)
        console.print(f"reports: {paths['json']}, {paths['md']}, {paths['junit']}")
    sys.stdout.flush()
    raise SystemExit(0 if report.passed() else 1)


def _force_progress() -> bool:
    import os

    return os.environ.get("DELEGATE_SDK_PROGRESS", "") == "1"
