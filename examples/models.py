"""Two small models in the form the CLI takes (``package.module:callable`` returning ``(module, example_inputs)``).

Run from the repository root::

    delegate-sdk inspect examples.models:conv_net --backends qnn,xnnpack
    delegate-sdk lower examples.models:encoder_layer --backends qnn -o encoder.dsdk
    delegate-sdk run encoder.dsdk --check examples.models:encoder_layer
"""

from __future__ import annotations

import torch
from torch import nn


class ConvNet(nn.Module):
    """A mobile-style conv net: conv-BN-ReLU stem, depthwise + pointwise conv, max pool, global mean, linear."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.pw = nn.Conv2d(16, 32, 1)
        self.head = nn.Linear(32, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.max_pool2d(self.stem(x), 2)
        x = torch.relu(self.pw(nn.functional.hardswish(self.dw(x))))
        return self.head(x.mean((2, 3)))


def conv_net() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    torch.manual_seed(0)
    model = ConvNet().eval()
    with torch.no_grad():  # non-trivial batch-norm statistics, as after training
        bn = model.stem[1]
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    return model, (torch.randn(1, 3, 32, 32),)


def encoder_layer() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """PyTorch's own transformer encoder layer (self-attention + feed-forward, post-norm), batch first."""
    torch.manual_seed(0)
    model = nn.TransformerEncoderLayer(d_model=32, nhead=4, dim_feedforward=64, dropout=0.0, batch_first=True).eval()
    return model, (torch.randn(1, 16, 32),)
