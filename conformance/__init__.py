"""The delegate-sdk conformance corpus (shipped as package ``delegate_sdk_corpus``).

``op_cases()`` and ``model_cases()`` return fresh lists of
:class:`delegate_sdk.conformance.cases.OpCase` / ``ModelCase``. The engine loads
this package through :func:`delegate_sdk.conformance.corpus.load_corpus` (by
package name when installed, else by file path), never as a bare ``conformance``
import: tosa-tools owns that top-level name.
"""

from __future__ import annotations


def op_cases() -> list:
    from . import ops

    return ops.op_cases()


def model_cases() -> list:
    from . import models

    return models.model_cases()


def zoo_cases() -> list:
    """Real architectures (transformers, torch.nn LSTM): the optional ``zoo`` suite; ImportError naming the
    extra when transformers is not installed."""
    from . import zoo

    return zoo.zoo_cases()
