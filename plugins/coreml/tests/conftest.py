from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    # the tests import coreml_cases (a distinct name: other plugins' test helpers share sys.path);
    # --import-mode=importlib does not put the test folder on sys.path itself
    sys.path.insert(0, str(HERE))
