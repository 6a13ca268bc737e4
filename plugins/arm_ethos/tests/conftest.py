"""Fixtures for the arm_ethos tests; the helpers behind them live in arm_ethos_helpers.py."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)  # arm_ethos_cases.py / arm_ethos_helpers.py, shared by several test files

from arm_ethos_helpers import OpResult, candidates, export, options, run_on_reference_model  # noqa: E402


@pytest.fixture
def ref_run() -> Callable[..., OpResult]:
    return run_on_reference_model


@pytest.fixture
def exported() -> Callable[..., torch.export.ExportedProgram]:
    return export


@pytest.fixture
def opts() -> Callable[..., dict[str, Any]]:
    return options


@pytest.fixture
def claim_all() -> Callable[..., Any]:
    def go(module: torch.nn.Module, args: tuple[Any, ...], **kw: Any) -> Any:
        from delegate_sdk_arm_ethos import plugin

        ep = export(module, args)
        return plugin.claim(ep, candidates(ep), options(**kw))

    return go
