"""delegate-sdk conformance: is a plugin numerically faithful to eager PyTorch?

- :mod:`.cases`: ``OpCase`` / ``ModelCase`` / ``Sample`` / ``In`` (what plugins return from the
  ``conformance_cases`` hook);
- :mod:`.sampling`: seeded inputs; :mod:`.tolerance`: THE tolerance policy;
- :mod:`.expectations`: a plugin's known failures; :mod:`.runner`: worker processes (CRASH, TIMEOUT);
- :mod:`.pipeline`: lower -> save -> load -> run -> compare; :mod:`.bisect`: failing models;
- :mod:`.report`: JSON / Markdown / JUnit; :mod:`.command`: the ``conform`` click command;
- :func:`run_conformance`: the same from Python.
"""

from __future__ import annotations

from typing import Any

from delegate_sdk.conformance.cases import In, ModelCase, OpCase, Sample

OUTCOMES = ("PASS", "PASS_PARTIAL", "NOT_CLAIMED", "XFAIL", "XPASS", "SKIP", "FAIL_CLAIM", "FAIL_PREPROCESS",
            "FAIL_LOAD", "FAIL_RUN", "FAIL_MISMATCH", "FAIL_CONTRACT", "CRASH", "TIMEOUT")


def run_conformance(*args: Any, **kwargs: Any) -> Any:
    from delegate_sdk.conformance.engine import run_conformance as _run

    return _run(*args, **kwargs)


__all__ = ["OUTCOMES", "In", "ModelCase", "OpCase", "Sample", "run_conformance"]
