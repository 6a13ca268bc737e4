"""Fixtures for the arm_ethos tests: the plugin kit (``delegate_sdk.testing``) bound to this backend, and the
arm-specific helpers of arm_ethos_helpers.py."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from delegate_sdk import testing

warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)  # arm_ethos_cases.py / arm_ethos_helpers.py, shared by several test files

from arm_ethos_helpers import BACKEND, OpResult, options, run_on_reference_model  # noqa: E402


@pytest.fixture
def ref_run() -> Callable[..., OpResult]:
    return run_on_reference_model


@pytest.fixture
def exported() -> Callable[..., torch.export.ExportedProgram]:
    """The program arm_ethos's hooks see for a module (its keep_ops kept whole), as the core captures it."""
    return lambda module, args: testing.capture(BACKEND, module, args)


@pytest.fixture
def opts() -> Callable[..., dict[str, Any]]:
    return options


@pytest.fixture
def claim_all() -> Callable[..., testing.ClaimResult]:
    """arm_ethos's claim of a whole module, options validated and the answer checked as the core does."""
    return lambda module, args, **kw: testing.claim(BACKEND, module, args, **kw)
