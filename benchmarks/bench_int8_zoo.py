"""int8 accuracy on full-size CNNs, against the targets of issue #13, every int8 plugin in the same run.

The architectures are transformers' ResNet-18 (``ResNetConfig`` with basic blocks [2, 2, 2, 2], widths 64-512:
torchvision's resnet18), MobileNetV2 (its default config: width 1.0), and in place of torchvision's
mobilenet_v3_small and squeezenet1_1 (torchvision's C extension does not load here) PP-LCNet x1.0 (MobileNetV3's
hardswish and squeeze-excite, its default config) and HGNetV2-B0 (fan-out and channel concat, as fire modules do;
PaddleDetection's B0 widths), at 224x224, batch 1, random weights
initialised as torchvision initialises them (Kaiming-normal fan-out convolutions, N(0, 0.01) classifier), batch
norm statistics re-estimated on random images, calibrated on 8 seeded random inputs, judged on 4 others.

``--torchvision DIR`` takes torchvision's own resnet18, mobilenet_v2, mobilenet_v3_small and squeezenet1_1 instead,
as written by ``scripts/dev torchvision-models DIR`` (torchvision cannot be imported beside our torch, so they are
exported from their own environment; same initialisation and batch norm re-estimation).

Baseline: eager PyTorch (fp32) in the same run. Prints SQNR, top-1 agreement, partitions and latency per plugin
and whether each meets its target (ResNet-18, squeezenet1_1 and HGNetV2 >= 20 dB, the mobile nets >= 10 dB)::

    python benchmarks/bench_int8_zoo.py
    python benchmarks/bench_int8_zoo.py --models mobilenet_v2 --configs xnnpack:int8
    scripts/dev torchvision-models models/tv && python benchmarks/bench_int8_zoo.py --torchvision models/tv
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from delegate_sdk.comparison import compare

TARGET_DB = {"resnet18": 20.0, "mobilenet_v2": 10.0, "lcnet": 10.0, "hgnet": 20.0, "mobilenet_v3_small": 10.0,
             "squeezenet1_1": 20.0}


def torchvision_init(model: nn.Module, size: int) -> nn.Module:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
            m.reset_running_stats()
            m.momentum = None
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
    model.train()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _ in range(4):
            model(torch.randn(8, 3, size, size, generator=g))
    return model.eval()


def build(name: str) -> nn.Module:
    """ImageNet-shaped classifiers (1000 labels: a transformers config has 2 unless told)."""
    import transformers as T

    if name == "resnet18":
        cfg = T.ResNetConfig(depths=[2, 2, 2, 2], hidden_sizes=[64, 128, 256, 512], layer_type="basic", num_labels=1000)
        return T.ResNetForImageClassification(cfg)
    if name == "mobilenet_v2":
        return T.MobileNetV2ForImageClassification(T.MobileNetV2Config(num_labels=1000))
    if name == "lcnet":
        return T.PPLCNetForImageClassification(T.PPLCNetConfig(hidden_dropout_prob=0.0, num_labels=1000))
    if name == "hgnet":
        cfg = T.HGNetV2Config(stem_channels=[3, 16, 16], stage_in_channels=[16, 64, 256, 512],
                              stage_mid_channels=[16, 32, 64, 128], stage_out_channels=[64, 256, 512, 1024],
                              stage_num_blocks=[1, 1, 2, 1], stage_light_block=[False, False, True, True],
                              stage_kernel_size=[3, 3, 5, 5], stage_numb_of_layers=[3, 3, 3, 3],
                              hidden_sizes=[64, 256, 512, 1024], embedding_size=16, num_labels=1000)
        return T.HGNetV2ForImageClassification(cfg)
    raise SystemExit(f"unknown model {name}")


def exported(directory: Path) -> dict[str, Any]:
    """name -> (ExportedProgram, input size) for every model ``scripts/dev torchvision-models`` wrote there."""
    manifest = json.loads((directory / "manifest.json").read_text())
    print(f"torchvision {manifest['torchvision']} models exported under torch {manifest['torch']}")
    return {e["model"]: (torch.export.load(str(directory / e["file"])), e["input"][-1]) for e in manifest["models"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet18,mobilenet_v2,lcnet,hgnet")
    ap.add_argument("--configs", default="xnnpack:int8,qnn:int8,arm_ethos:int8")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--torchvision", type=Path, metavar="DIR", help="torchvision's models from this directory")
    args = ap.parse_args()
    programs = exported(args.torchvision) if args.torchvision else {}
    names = list(programs) if programs else args.models.split(",")
    for name in names:
        torch.manual_seed(0)
        model, size = programs[name] if programs else (torchvision_init(build(name), args.size), args.size)
        c = compare(model, (torch.randn(1, 3, size, size),), args.configs.split(","), calibration=8,
                    eval_inputs=4, calls=3, name=name)
        print(f"{name} {size}x{size}: eager {c.eager_latency_ms['median']:.1f} ms; target "
              f">= {TARGET_DB[name]:g} dB")
        for r in c.results:
            if not r.ok:
                print(f"  {r.label:16s} FAILED: {r.error}")
                continue
            meets = "meets" if (r.sqnr_db or 0) >= TARGET_DB[name] else "BELOW"
            print(f"  {r.label:16s} SQNR {r.sqnr_db:5.1f} dB ({meets}), top-1 {r.top1:.0%}, {r.partitions} "
                  f"partition(s), {r.nodes_delegated}/{r.nodes_total} nodes, lowering {r.lowering_s:.0f} s, "
                  f"{r.latency_ms['median']:.1f} ms ({r.latency_ms['median'] / c.eager_latency_ms['median']:.2f}x "
                  f"eager)")


if __name__ == "__main__":
    main()
