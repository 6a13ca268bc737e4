"""Does a fallback backend ever cost the first backend partitions? Real architectures, every accelerator first.

Run: python benchmarks/bench_priority_lists.py [--models bert,vit,...] [--first qnn,coreml,arm_ethos]

For each model and each first backend F: ``inspect`` on ``[F]`` alone (the baseline, same run) and on
``[F, xnnpack]``. Printed: F's partitions in each, total partitions of the list, and nodes left on eager
PyTorch. The issue's promise is that the second column never exceeds the first. Architectures come from
``transformers`` (random weights, tiny configs) and ``torch.nn`` (LSTM, GRU); no compile runs, so this
measures the partitioner, not the toolchains.
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

Model = tuple[nn.Module, tuple[Any, ...], dict[str, Any]]


def bert() -> Model:
    import transformers as T

    cfg = T.BertConfig(vocab_size=200, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=128, max_position_embeddings=64)
    ids, mask = torch.randint(0, 200, (1, 16)), torch.ones(1, 16, dtype=torch.long)
    return T.BertModel(cfg).eval(), (), {"input_ids": ids, "attention_mask": mask}


def vit() -> Model:
    import transformers as T

    cfg = T.ViTConfig(image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=128, num_labels=10)
    return T.ViTForImageClassification(cfg).eval(), (torch.randn(1, 3, 32, 32),), {}


def resnet() -> Model:
    import transformers as T

    cfg = T.ResNetConfig(embedding_size=16, hidden_sizes=[16, 32, 64, 64], depths=[1, 1, 1, 1],
                         layer_type="basic", num_labels=10)
    return T.ResNetForImageClassification(cfg).eval(), (torch.randn(1, 3, 64, 64),), {}


def mobilenet_v2() -> Model:
    import transformers as T

    cfg = T.MobileNetV2Config(depth_multiplier=0.35, image_size=64, num_labels=10)
    return T.MobileNetV2ForImageClassification(cfg).eval(), (torch.randn(1, 3, 64, 64),), {}


class _Rnn(nn.Module):
    def __init__(self, cell: type[nn.Module]) -> None:
        super().__init__()
        self.rnn = cell(32, 64, num_layers=2, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rnn(x)[0]


def lstm() -> Model:
    return _Rnn(nn.LSTM).eval(), (torch.randn(1, 16, 32),), {}


def gru() -> Model:
    return _Rnn(nn.GRU).eval(), (torch.randn(1, 16, 32),), {}


MODELS: dict[str, Callable[[], Model]] = {"bert": bert, "vit": vit, "resnet": resnet, "mobilenet_v2": mobilenet_v2,
                                          "lstm": lstm, "gru": gru}


def main() -> None:
    import delegate_sdk

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--first", default="qnn,coreml,arm_ethos")
    ap.add_argument("--fallback", default="xnnpack")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    console = Console(width=150)
    table = Table(title=f"partitions of the first backend: alone (baseline) vs with {args.fallback} after it")
    for col in ("model", "first", "alone: parts", f"+{args.fallback}: first's parts", "total parts",
                "eager nodes alone", "eager nodes with fallback", "ok"):
        table.add_column(col, justify="left" if col in ("model", "first") else "right")
    worse = 0
    t0 = time.perf_counter()
    for name in args.models.split(","):
        torch.manual_seed(0)
        model, a, kw = MODELS[name]()
        for first in args.first.split(","):
            def run(backends: list[str]) -> Any:
                return delegate_sdk.inspect(model, a, backends, example_kwargs=kw or None)

            alone, both = run([first]), run([first, args.fallback])
            mine = sum(1 for p in both.partitions if p.backend == first)
            ok = mine <= len(alone.partitions)
            worse += not ok
            table.add_row(name, first, str(len(alone.partitions)), str(mine), str(len(both.partitions)),
                          str(len(alone.fallback)), str(len(both.fallback)), "yes" if ok else "[red]NO[/red]")
    console.print(table)
    console.print(f"{worse} list(s) where the fallback cost the first backend partitions; "
                  f"{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
