"""Whole-model conformance cases, written in plain PyTorch.

Small on purpose (each lowers in about a second): what they exercise is the
variety of structure a delegate meets in real models: linear stacks, conv + batch
norm + pooling, depthwise-separable and residual blocks, attention with layer norm
and GELU, recurrent cells, embeddings, an encoder/decoder with upsample and
concat, several outputs, constants and buffers, a dynamic batch, and a model
mixing ops that no backend supports so that it splits into several partitions
with eager fallback between them. Judged by SQNR; bisected when they fail.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from delegate_sdk.conformance.cases import In, ModelCase, Sample


def _x(*shape: int, dist: str = "normal", dtype: str = "float32", **kw: float) -> In:
    return In(tuple(shape), dtype, dist, **kw)


def _bn(c: int) -> nn.BatchNorm2d:
    """Batch norm with non-trivial running statistics (an untrained BN is the identity)."""
    bn = nn.BatchNorm2d(c)
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(c) * 0.2)
        bn.running_var.copy_(torch.rand(c) + 0.5)
        bn.weight.copy_(torch.rand(c) + 0.5)
        bn.bias.copy_(torch.randn(c) * 0.1)
    return bn


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 8, 3, padding=1), _bn(8)
        self.c2, self.b2 = nn.Conv2d(8, 16, 3, padding=1), _bn(16)
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.b1(self.c1(x))), 2)
        x = F.avg_pool2d(F.relu(self.b2(self.c2(x))), 2)
        return self.fc(torch.flatten(x, 1))


class DepthwiseSeparable(nn.Module):
    """MobileNetV2-style inverted residual: expand 1x1, depthwise 3x3, project 1x1, skip."""

    def __init__(self, c: int = 16, expand: int = 4) -> None:
        super().__init__()
        h = c * expand
        self.expand, self.b0 = nn.Conv2d(c, h, 1, bias=False), _bn(h)
        self.dw, self.b1 = nn.Conv2d(h, h, 3, padding=1, groups=h, bias=False), _bn(h)
        self.project, self.b2 = nn.Conv2d(h, c, 1, bias=False), _bn(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self.b0(self.expand(x)))
        y = F.relu6(self.b1(self.dw(y)))
        return x + self.b2(self.project(y))


class ResidualBlock(nn.Module):
    def __init__(self, c: int = 16) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(c, c, 3, padding=1, bias=False), _bn(c)
        self.c2, self.b2 = nn.Conv2d(c, c, 3, padding=1, bias=False), _bn(c)
        self.down, self.bd = nn.Conv2d(c, 2 * c, 1, stride=2, bias=False), _bn(2 * c)
        self.c3 = nn.Conv2d(c, 2 * c, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.b1(self.c1(x)))
        x = F.relu(x + self.b2(self.c2(y)))
        return F.relu(self.bd(self.down(x)) + self.c3(x))


class EncoderLayer(nn.Module):
    """Pre-norm transformer encoder layer: multi-head self-attention, layer norm, GELU MLP."""

    def __init__(self, d: int = 32, heads: int = 4, ff: int = 64) -> None:
        super().__init__()
        self.h, self.dh = heads, d // heads
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.ff1, self.ff2 = nn.Linear(d, ff), nn.Linear(ff, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        q = q.view(b, t, self.h, self.dh).transpose(1, 2)
        k = k.view(b, t, self.h, self.dh).transpose(1, 2)
        v = v.view(b, t, self.h, self.dh).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.dh))
        y = att.softmax(-1) @ v
        x = x + self.out(y.transpose(1, 2).reshape(b, t, d))
        return x + self.ff2(F.gelu(self.ff1(self.ln2(x))))


class GRUModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.GRU(8, 16, batch_first=True)
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, h = self.rnn(x)
        return self.head(out[:, -1]) + h[0].sum(-1, keepdim=True)


class LSTMModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(8, 12, batch_first=True)
        self.head = nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.head(out.mean(1))


class TextClassifier(nn.Module):
    def __init__(self, vocab: int = 100, d: int = 24) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.fc1, self.fc2 = nn.Linear(2 * d, 32), nn.Linear(32, 5)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        e = self.emb(tokens)
        pooled = torch.cat([e.mean(1), e.amax(1)], dim=-1)
        return self.fc2(torch.tanh(self.fc1(pooled)))


class UNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.e1 = nn.Conv2d(3, 8, 3, padding=1)
        self.e2 = nn.Conv2d(8, 16, 3, padding=1)
        self.mid = nn.Conv2d(16, 16, 3, padding=1)
        self.d2 = nn.Conv2d(32, 8, 3, padding=1)
        self.d1 = nn.Conv2d(16, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s1 = F.relu(self.e1(x))                      # 16x16
        s2 = F.relu(self.e2(F.max_pool2d(s1, 2)))    # 8x8
        m = F.relu(self.mid(F.max_pool2d(s2, 2)))    # 4x4
        u2 = F.interpolate(m, scale_factor=2, mode="nearest")
        d2 = F.relu(self.d2(torch.cat([u2, s2], 1)))
        u1 = F.interpolate(d2, scale_factor=2, mode="bilinear", align_corners=False)
        d1 = F.relu(self.d1(torch.cat([u1, s1], 1)))
        return self.head(d1)


class MultiOutput(nn.Module):
    """Three outputs in a dict-free pytree: a tuple of (logits, embedding, (aux,))."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
        self.cls = nn.Linear(8, 6)
        self.aux = nn.Conv2d(8, 1, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor]]:
        f = F.relu(self.body(x))
        emb = f.mean((2, 3))
        return self.cls(emb), F.normalize(emb, dim=-1), (torch.sigmoid(self.aux(f)),)


class ConstantsAndBuffers(nn.Module):
    """Input normalisation from buffers, a constant tensor made in forward, a parameter used twice."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.5, -0.25, 0.1]).view(1, 3, 1, 1))
        self.register_buffer("inv_std", torch.tensor([2.0, 4.0, 1.5]).view(1, 3, 1, 1))
        self.register_buffer("counter", torch.zeros(()), persistent=False)
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.scale = nn.Parameter(torch.rand(1, 6, 1, 1) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) * self.inv_std
        y = self.conv(x) * self.scale
        bias = torch.linspace(-1.0, 1.0, 6).view(1, 6, 1, 1)
        return torch.tanh(y + bias) * self.scale + self.counter


class DynamicBatch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, padding=1)
        self.bn = _bn(8)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.adaptive_avg_pool2d(F.relu(self.bn(self.conv(x))), 1).flatten(1)
        return self.fc(y).log_softmax(-1)


class FallbackMix(nn.Module):
    """Delegable blocks separated by ops no backend implements (Bessel J0, digamma): several partitions."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.c1(x))
        y = torch.special.bessel_j0(y)               # eager
        y = torch.relu(self.c2(y)) + 1.0
        y = torch.digamma(y)                          # eager
        return self.fc(y.mean((2, 3)))


class SqueezeExcite(nn.Module):
    def __init__(self, c: int = 16) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.fc1, self.fc2 = nn.Linear(c, c // 4), nn.Linear(c // 4, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.silu(self.conv(x))
        w = torch.sigmoid(self.fc2(F.relu(self.fc1(y.mean((2, 3))))))
        return y * w[:, :, None, None] + x


def model_cases() -> list[ModelCase]:
    img = lambda c=3, hw=16, b=2: _x(b, c, hw, hw)  # noqa: E731
    return [
        ModelCase("model/mlp", MLP, [Sample("normal", (_x(4, 32),)), Sample("rank", (_x(1, 32),), name="batch1")],
                  "3-layer MLP with ReLU"),
        ModelCase("model/small_cnn", SmallCNN, [Sample("normal", (img(),))],
                  "conv + batch norm + ReLU + max/avg pooling + linear head"),
        ModelCase("model/mobilenet_block", DepthwiseSeparable, [Sample("normal", (img(16, 12),))],
                  "inverted residual: 1x1 expand, depthwise 3x3, 1x1 project, ReLU6, skip"),
        ModelCase("model/resnet_block", ResidualBlock, [Sample("normal", (img(16, 10),))],
                  "two residual blocks, one strided with a 1x1 projection shortcut"),
        ModelCase("model/transformer_encoder", EncoderLayer,
                  [Sample("normal", (_x(2, 6, 32),)),
                   Sample("dynamic", (_x(2, 7, 32),), dynamic={0: {1: "seq"}})],
                  "pre-norm encoder layer: multi-head attention, layer norm, GELU MLP"),
        ModelCase("model/gru", GRUModel, [Sample("normal", (_x(2, 5, 8),))], "single-layer GRU + linear head"),
        ModelCase("model/lstm", LSTMModel, [Sample("normal", (_x(2, 6, 8),))], "single-layer LSTM, mean pooled"),
        ModelCase("model/text_classifier", TextClassifier,
                  [Sample("normal", (In((4, 12), "int64", "index", high=100),))],
                  "embedding + mean/max pooling + MLP classifier"),
        ModelCase("model/unet", UNet, [Sample("normal", (img(3, 16, 1),))],
                  "U-Net style encoder/decoder with nearest and bilinear upsample and skip concat"),
        ModelCase("model/multi_output", MultiOutput, [Sample("normal", (img(3, 8),))],
                  "three outputs in a nested tuple"),
        ModelCase("model/constants_buffers", ConstantsAndBuffers, [Sample("normal", (img(3, 8),))],
                  "buffers, an in-forward constant and a shared parameter"),
        ModelCase("model/dynamic_batch", DynamicBatch,
                  [Sample("normal", (img(4, 8),)),
                   Sample("dynamic", (img(4, 8, 5),), dynamic={0: {0: "batch"}})],
                  "conv net lowered with a dynamic batch dimension"),
        ModelCase("model/fallback_mix", FallbackMix, [Sample("normal", (img(3, 8),))],
                  "delegable blocks split by ops no backend supports (eager fallback between partitions)"),
        ModelCase("model/squeeze_excite", SqueezeExcite, [Sample("normal", (img(16, 8),))],
                  "conv + SiLU + squeeze-and-excitation gating"),
    ]
