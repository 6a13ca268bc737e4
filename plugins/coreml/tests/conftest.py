from __future__ import annotations

import sys
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))  # coreml_cases (a distinct name: other plugins' test helpers share sys.path)

warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)
