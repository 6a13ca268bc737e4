"""Real architectures nobody here wrote, as conformance model cases: ``delegate-sdk conform --suite zoo``.

From maintained libraries: ``transformers`` (ResNet, MobileNetV2 with TF-style padding, EfficientNet with its
squeeze-excite and swish, PP-LCNet in MobileNetV3's style, HGNetV2 with SqueezeNet's fan-out and concat, ViT,
BERT) and ``torch.nn`` (a 2-layer LSTM). Random weights in tiny configs and
small inputs, so that a case lowers in seconds: PyTorch's default initialisation (transformers' std-0.02 one
makes tiny CNNs' activations vanish: a 10-block EfficientNet ends at 1e-38), then batch-norm statistics
re-estimated on random images so that activations have real ranges. ``ZOO`` holds the same builders, for the
model-zoo tests and benchmarks (which call BERT with keyword arguments).

MobileNetV2 is in ``ZOO`` but not a conformance case: with random weights it is too ill-conditioned for an
absolute floor. Eager PyTorch itself in fp16 reaches only 21-34 dB against fp32 over the widths (0.25-1.0),
input sizes (32, 64), paddings and initialisations tried, below the fp16 floor of 30 dB, and every int8
toolchain here lands anywhere between 0 and 12 dB depending on the inputs drawn. A verdict on it would say
more about the weights than about the plugin; the model-zoo test holds the plugins to each other on it.

Optional: needs ``transformers`` (``pip install "delegate-sdk[zoo]"``); the ``all`` suite does not include it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from delegate_sdk.conformance.cases import In, ModelCase, Sample

Built = tuple[nn.Module, tuple[Any, ...], dict[str, Any]]


def bn_recalibrated(model: nn.Module, shape: tuple[int, ...]) -> nn.Module:
    """``model`` with PyTorch's default initialisation and batch-norm statistics from random images."""
    for m in model.modules():
        if hasattr(m, "reset_parameters") and not isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_parameters()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # a plain average over the batches below
    model.train()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _ in range(4):
            model(torch.randn(*shape, generator=g))
    return model.eval()


def resnet() -> Built:
    import transformers as T

    cfg = T.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 16, 32], depths=[1, 1, 1, 1], layer_type="basic",
                         num_labels=10)
    return bn_recalibrated(T.ResNetForImageClassification(cfg), (4, 3, 32, 32)), (torch.randn(1, 3, 32, 32),), {}


def mobilenet_v2() -> Built:
    import transformers as T

    cfg = T.MobileNetV2Config(depth_multiplier=0.25, image_size=32, num_labels=10)
    return bn_recalibrated(T.MobileNetV2ForImageClassification(cfg), (4, 3, 32, 32)), (torch.randn(1, 3, 32, 32),), {}


def efficientnet() -> Built:
    import transformers as T

    cfg = T.EfficientNetConfig(image_size=32, width_coefficient=0.1, depth_coefficient=0.1, hidden_dim=128,
                               num_labels=10)
    return bn_recalibrated(T.EfficientNetForImageClassification(cfg), (4, 3, 32, 32)), (torch.randn(1, 3, 32, 32),), {}


def lcnet() -> Built:
    """PP-LCNet: MobileNetV3's recipe (depthwise-separable convolutions, hardswish, squeeze-excite gated by a
    hardsigmoid) in a maintained library; torchvision's MobileNetV3 needs its C extension, which does not load
    here."""
    import transformers as T

    # (kernel, in, out, stride, squeeze-excite) per block; transformers wants 5 stages
    blocks = [[[3, 16, 32, 1, False]], [[3, 32, 64, 2, False]], [[3, 64, 64, 1, False]], [[5, 64, 128, 2, False]],
              [[5, 128, 128, 1, True], [5, 128, 128, 1, True]]]
    cfg = T.PPLCNetConfig(scale=0.25, block_configs=blocks, class_expand=64, num_labels=10, hidden_dropout_prob=0.0)
    return bn_recalibrated(T.PPLCNetForImageClassification(cfg), (4, 3, 32, 32)), (torch.randn(1, 3, 32, 32),), {}


def hgnet() -> Built:
    """HGNetV2: SqueezeNet's fire-module structure (one tensor fanned out to several convolutions, their
    outputs concatenated on channels, a 1x1 squeeze) in its stem (conv and max-pool branches) and blocks.
    SqueezeNet itself is only in torchvision (and timm, which imports torchvision's C extension)."""
    import transformers as T

    cfg = T.HGNetV2Config(embedding_size=8, stem_channels=[3, 8, 8], stage_in_channels=[8, 16],
                          stage_mid_channels=[8, 8], stage_out_channels=[16, 32], stage_num_blocks=[1, 1],
                          stage_downsample=[False, True], stage_downsample_strides=[2, 2],
                          stage_light_block=[False, True], stage_kernel_size=[3, 3], stage_numb_of_layers=[2, 2],
                          depths=[1, 1], hidden_sizes=[16, 32], num_labels=10)
    return bn_recalibrated(T.HGNetV2ForImageClassification(cfg), (4, 3, 32, 32)), (torch.randn(1, 3, 32, 32),), {}


def vit() -> Built:
    import transformers as T

    cfg = T.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64, num_labels=10)
    return T.ViTForImageClassification(cfg).eval(), (torch.randn(1, 3, 32, 32),), {}


def bert() -> Built:
    import transformers as T

    cfg = T.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64, max_position_embeddings=32)
    kw = {"input_ids": torch.randint(0, 100, (1, 8)), "attention_mask": torch.ones(1, 8, dtype=torch.long)}
    return T.BertModel(cfg).eval(), (), kw


class Lstm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(16, 32, num_layers=2, batch_first=True)  # 6 steps: 2 x 6 unrolled cells

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rnn(x)[0]


def lstm() -> Built:
    return Lstm().eval(), (torch.randn(1, 6, 16),), {}


ZOO: dict[str, Callable[[], Built]] = {"resnet": resnet, "mobilenet_v2": mobilenet_v2, "efficientnet": efficientnet,
                                       "lcnet": lcnet, "hgnet": hgnet, "vit": vit, "bert": bert, "lstm": lstm}


class Logits(nn.Module):
    """A transformers classifier as conformance runs models: positional tensors in, its logits out."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=pixel_values)
        return out.logits if "logits" in out else out.last_hidden_state  # PP-LCNet returns its logits so


class BertHidden(nn.Module):
    """BERT called as transformers users call it (keywords), its last hidden state out."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def _module(name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        model = ZOO[name]()[0]
        if name == "bert":
            return BertHidden(model).eval()
        return model if name == "lstm" else Logits(model).eval()

    return build


def zoo_cases() -> list[ModelCase]:
    try:
        import transformers  # noqa: F401
    except ImportError as e:
        raise ImportError("the zoo suite needs transformers: pip install 'delegate-sdk[zoo]'") from e
    image = (Sample("normal", (In((1, 3, 32, 32)),)),)
    return [
        ModelCase("model/zoo_resnet", _module("resnet"), list(image),
                  "transformers ResNet (basic blocks, 4 stages), 32x32"),
        ModelCase("model/zoo_efficientnet", _module("efficientnet"), list(image),
                  "transformers EfficientNet (squeeze-excite, swish, depthwise), 32x32"),
        ModelCase("model/zoo_lcnet", _module("lcnet"), list(image),
                  "transformers PP-LCNet (MobileNetV3-style: hardswish, squeeze-excite, depthwise 5x5), 32x32"),
        ModelCase("model/zoo_hgnet", _module("hgnet"), list(image),
                  "transformers HGNetV2 (fire-module-style fan-out and channel concat, max-pool branch), 32x32"),
        ModelCase("model/zoo_vit", _module("vit"), list(image),
                  "transformers ViT (2 layers, patch 8, GELU, layer norm), 32x32"),
        ModelCase("model/zoo_bert", _module("bert"),
                  [Sample("normal", (In((1, 8), "int64", "index", high=100), In((1, 8), "int64", "int", low=1,
                                                                                  high=2)))],
                  "transformers BERT (2 layers, attention mask, GELU, embeddings), 8 tokens"),
        ModelCase("model/zoo_lstm", _module("lstm"), [Sample("normal", (In((1, 6, 16)),))],
                  "torch.nn 2-layer LSTM, 6 steps (unrolled into cells)"),
    ]
