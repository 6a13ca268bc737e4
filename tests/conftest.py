from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))  # the test-only plugins and models (package dsdk_test_plugins)

warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)


@pytest.fixture
def registry():
    from delegate_sdk.registry import Registry

    return Registry(load_entry_points=False, load_env=False)
