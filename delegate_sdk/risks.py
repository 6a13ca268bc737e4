"""Known risks of a claim: what a plugin's own conformance expectations say about an op it takes.

A plugin ships ``expectations.toml``: the conformance samples it is known to fail, each with a reason
("XNNPACK's exp returns 0 for nan"). Those are facts about the claims it makes, so ``inspect`` shows them
beside the nodes they concern: an app developer sees that a claimed ``exp`` differs from eager PyTorch on
NaN before shipping, not after.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

#: what an expected outcome means for a user of the claim
_MEANING = {
    "FAIL_PREPROCESS": "may fail to compile", "FAIL_LOAD": "may fail to load", "FAIL_RUN": "may fail to run",
    "CRASH": "may crash", "TIMEOUT": "may hang", "FAIL_MISMATCH": "differs from eager PyTorch",
    "FAIL_CONTRACT": "breaks the runtime contract",
}


@dataclass(frozen=True)
class Risk:
    """One known failure of the backend on an op, at one precision."""

    op: str
    #: the conformance samples it was seen on (``op/exp/edge``)
    samples: tuple[str, ...]
    what: str
    reason: str

    def __str__(self) -> str:
        more = f" +{len(self.samples) - 3}" if len(self.samples) > 3 else ""
        return f"{self.what}: {self.reason} (conformance: {', '.join(self.samples[:3])}{more})"

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "samples": list(self.samples), "what": self.what, "reason": self.reason}


def known_risks(backend: Any, precision: str) -> dict[str, list[Risk]]:
    """Op -> the known failures the backend's shipped expectations record for it at ``precision``."""
    return _known_risks(backend.name, backend.plugin, precision)


@functools.lru_cache(maxsize=32)
def _known_risks(name: str, plugin: Any, precision: str) -> dict[str, list[Risk]]:
    from delegate_sdk.conformance import expectations as exp
    from delegate_sdk.conformance.cases import sample_id
    from delegate_sdk.conformance.runner import collect_cases

    found = exp.locate(plugin)
    if found is None:
        return {}
    try:
        known = exp.parse(found.text, found.source)
        cases = [c for c in collect_cases(name, "ops") if c.op]
    except Exception as e:  # a broken expectations file or corpus is conform's to report, not inspect's
        log.warning("known risks of %s are not shown: %s: %s", name, type(e).__name__, e)
        return {}
    out: dict[str, list[Risk]] = {}
    for e in known:
        hits: dict[str, list[str]] = {}
        for c in cases:
            for s in c.samples:
                sid = sample_id(c, s)
                if e.matches(sid, c.id, precision):
                    hits.setdefault(str(c.op), []).append(sid)
        what = " or ".join(dict.fromkeys(_MEANING.get(o, o) for o in e.outcomes)) or "may fail"
        for op, samples in hits.items():
            out.setdefault(op, []).append(Risk(op, tuple(samples), what, e.reason))
    return out
