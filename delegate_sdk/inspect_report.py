"""What ``inspect`` returns: who would take which node, and why not for the rest."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from delegate_sdk.types import PerfEstimate, Refusal


@dataclass
class NodePlacement:
    node: str
    op: str
    #: partition id, or None when the node runs on eager PyTorch
    partition: str | None
    backend: str | None
    reasons: list[Refusal] = field(default_factory=list)
    #: True when the backend runs it on its host CPU inside the partition (hosted ops), not on the accelerator
    hosted: bool = False
    #: what the backend's own conformance expectations record against this op (see ``delegate_sdk.risks``)
    risks: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"node": self.node, "op": self.op, "partition": self.partition, "backend": self.backend,
                "hosted": self.hosted, "reasons": [r.to_json() for r in self.reasons], "risks": self.risks}


@dataclass
class PartitionPlanInfo:
    id: str
    backend: str
    nodes: list[str]
    ops: list[str]
    perf: PerfEstimate | None = None
    hosted: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "backend": self.backend, "nodes": self.nodes, "ops": self.ops,
                "hosted": self.hosted, "perf": self.perf.to_json() if self.perf else None}


@dataclass
class InspectReport:
    backends: list[str]
    nodes: list[NodePlacement]
    partitions: list[PartitionPlanInfo]

    @property
    def nodes_total(self) -> int:
        return len(self.nodes)

    @property
    def nodes_delegated(self) -> int:
        return sum(1 for n in self.nodes if n.partition is not None)

    @property
    def nodes_hosted(self) -> int:
        return sum(1 for n in self.nodes if n.hosted)

    @property
    def fallback(self) -> list[NodePlacement]:
        return [n for n in self.nodes if n.partition is None]

    @property
    def risky(self) -> list[NodePlacement]:
        """Delegated nodes whose op the backend is known to get wrong somewhere (its shipped expectations)."""
        return [n for n in self.nodes if n.partition is not None and n.risks]

    def coverage(self) -> dict[str, int]:
        """Backend -> number of nodes it accelerates, ``"<backend> (hosted)"`` -> nodes it runs on its host CPU,
        ``"eager"`` for the rest."""
        return dict(Counter((f"{n.backend} (hosted)" if n.hosted else n.backend) or "eager" for n in self.nodes))

    def to_json(self) -> dict[str, Any]:
        return {"backends": self.backends, "nodes_total": self.nodes_total,
                "nodes_delegated": self.nodes_delegated, "nodes_hosted": self.nodes_hosted,
                "coverage": self.coverage(),
                "partitions": [p.to_json() for p in self.partitions], "nodes": [n.to_json() for n in self.nodes]}
