"""int8 accuracy on full-size CNNs, against the targets of issue #13, every int8 plugin in the same run.

The architectures are transformers' ResNet-18 (``ResNetConfig`` with basic blocks [2, 2, 2, 2], widths 64-512:
torchvision's resnet18), MobileNetV2 (its default config: width 1.0), and in place of torchvision's
mobilenet_v3_small and squeezenet1_1 (torchvision's C extension does not load here) PP-LCNet x1.0 (MobileNetV3's
hardswish and squeeze-excite, its default config) and HGNetV2-B0 (fan-out and channel concat, as fire modules do;
PaddleDetection's B0 widths), at 224x224, batch 1, random weights
initialised as torchvision initialises them (Kaiming-normal fan-out convolutions, N(0, 0.01) classifier), batch
norm statistics re-estimated on random images, calibrated on 8 seeded random inputs, judged on 4 others.
Baseline: eager PyTorch (fp32) in the same run. Prints SQNR, top-1 agreement, partitions and latency per plugin
and whether each meets its target (ResNet-18 and HGNetV2 >= 20 dB as for squeezenet1_1, the mobile nets >= 10 dB)::

    python benchmarks/bench_int8_zoo.py
    python benchmarks/bench_int8_zoo.py --models mobilenet_v2 --configs xnnpack:int8
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from delegate_sdk.comparison import compare

TARGET_DB = {"resnet18": 20.0, "mobilenet_v2": 10.0, "lcnet": 10.0, "hgnet": 20.0}


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet18,mobilenet_v2,lcnet,hgnet")
    ap.add_argument("--configs", default="xnnpack:int8,qnn:int8,arm_ethos:int8")
    ap.add_argument("--size", type=int, default=224)
    args = ap.parse_args()
    for name in args.models.split(","):
        torch.manual_seed(0)
        model = torchvision_init(build(name), args.size)
        c = compare(model, (torch.randn(1, 3, args.size, args.size),), args.configs.split(","), calibration=8,
                    eval_inputs=4, calls=3, name=name)
        print(f"{name} {args.size}x{args.size}: eager {c.eager_latency_ms['median']:.1f} ms; target "
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
