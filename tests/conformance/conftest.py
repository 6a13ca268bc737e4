from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import pytest

CANARIES = Path(__file__).resolve().parent / "canaries"
if str(CANARIES) not in sys.path:
    sys.path.insert(0, str(CANARIES))  # package dsdk_canaries (also reaches the workers via PYTHONPATH)

warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)


@pytest.fixture(scope="module")
def canaries_env():
    """Register every canary plugin (DELEGATE_SDK_PLUGINS) for this process and its conform workers."""
    from dsdk_canaries.plugins import ENV

    from delegate_sdk.registry import reset_default_registry

    mp = pytest.MonkeyPatch()
    mp.setenv("DELEGATE_SDK_PLUGINS", ENV)
    mp.setenv("PYTHONPATH", os.pathsep.join([str(CANARIES), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    reset_default_registry()
    yield
    mp.undo()
    reset_default_registry()
