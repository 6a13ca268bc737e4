"""Small models for core and CLI tests (``dsdk_test_plugins.models:small_cnn`` as a CLI MODEL)."""

from __future__ import annotations

import torch
from torch import nn


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 5)
        self.register_buffer("offset", torch.linspace(-1, 1, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(self.conv(x)))
        y = torch.nn.functional.max_pool2d(y, 2)
        y = torch.sin(y.mean((2, 3)))  # sin: an op the test backends do not take
        return self.fc(y) * 2 + self.offset


class TwoOutputs(nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = torch.relu(a + b)
        return s * 3, torch.tanh(s - a)


class DynamicMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.l1 = nn.Linear(6, 16)
        self.l2 = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.l2(torch.relu(self.l1(x)))


def small_cnn() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    torch.manual_seed(0)
    m = SmallCNN().eval()
    return m, (torch.randn(2, 3, 8, 8),)


def small_cnn_retrained() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """small_cnn's architecture with other weights: not the model a small_cnn artifact was lowered from."""
    torch.manual_seed(1)
    m = SmallCNN().eval()
    return m, (torch.randn(2, 3, 8, 8),)


def two_outputs() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    return TwoOutputs(), (torch.randn(4, 5), torch.randn(4, 5))


def dynamic_mlp() -> tuple[nn.Module, tuple[torch.Tensor, ...], dict]:
    torch.manual_seed(0)
    batch = torch.export.Dim("batch", min=1, max=64)
    return DynamicMLP().eval(), (torch.randn(4, 6),), {"x": {0: batch}}


class KeywordNet(nn.Module):
    """Called like a transformers model: ``model(input_ids=..., attention_mask=...)``, returns a dict."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(6, 8)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        h = torch.relu(self.proj(input_ids)) * attention_mask.unsqueeze(-1)
        return {"hidden": h, "pooled": h.sum(1)}


def keyword_net() -> dict:
    torch.manual_seed(0)
    return {"model": KeywordNet().eval(), "args": (),
            "kwargs": {"input_ids": torch.randn(2, 4, 6), "attention_mask": torch.ones(2, 4)}}
