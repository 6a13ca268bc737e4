"""``compare`` on every model of the zoo over all four backends at their default precisions: the table an app
developer would read, one markdown row per model x configuration.

Models: the conformance corpus's zoo builders (transformers ResNet, MobileNetV2, EfficientNet, PP-LCNet,
HGNetV2, ViT, BERT called with keywords, and a torch.nn LSTM; random weights, tiny configs, 32x32 images).
Baseline (named, same run): eager PyTorch on the same inputs, for accuracy and latency. Writes each model's
report.md / report.json / report.html under ``--report-dir`` when given::

    python benchmarks/bench_zoo_compare.py
    python benchmarks/bench_zoo_compare.py --models resnet,bert --report-dir /tmp/zoo
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

import torch

from delegate_sdk.comparison import compare
from delegate_sdk.conformance.corpus import load_corpus

ZOO = importlib.import_module(f"{load_corpus().__name__}.zoo").ZOO


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(ZOO))
    ap.add_argument("--backends", default="xnnpack,coreml,qnn,arm_ethos")
    ap.add_argument("--report-dir", type=Path)
    args = ap.parse_args()
    print("| model | configuration | lowered | MACs delegated | partitions | SQNR dB | top-1 | latency vs eager "
          "| lowering s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        torch.manual_seed(0)
        model, margs, kwargs = ZOO[name]()
        c = compare(model, margs, args.backends.split(","), example_kwargs=kwargs or None, calibration=8,
                    eval_inputs=4, calls=20, name=name)
        if args.report_dir:
            c.write_reports(args.report_dir / name)
        eager = c.eager_latency_ms["median"]
        for r in c.results:
            if not r.ok:
                print(f"| {name} | {r.label} | no: {r.error} | | | | | | |")
                continue
            macs = f"{r.macs_fraction:.0%}" if r.macs_total else "n/a"
            sqnr = "exact" if r.sqnr_db is None else f"{r.sqnr_db:.1f}"
            top1 = "" if r.top1 is None else f"{r.top1:.0%}"
            print(f"| {name} | {r.label} | yes | {macs} | {r.partitions} | {sqnr} | {top1} | "
                  f"{r.latency_ms['median'] / eager:.2f}x | {r.lowering_s:.1f} |", flush=True)
        rec = c.recommendation
        print(f"| {name} | recommended: {rec.config or 'none'} | {rec.reason} | | | | | | |", flush=True)


if __name__ == "__main__":
    main()
