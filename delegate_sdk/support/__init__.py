"""Writing a plugin's ``claim``: a declarative claim table (:mod:`.table`) and questions about nodes (:mod:`.nodes`).

Everything a plugin needs is importable from here::

    from delegate_sdk.support import ClaimTable, NodeLimits, Reject, arguments
"""

from delegate_sdk.support.hosting import static_tensors, with_hosted
from delegate_sdk.support.nodes import (
    PYTHON_SCALAR_OPS,
    arguments,
    constant_value,
    dtype_name,
    dtypes_of,
    has_dynamic_shape,
    has_zero_size,
    input_nodes,
    input_tensors,
    is_constant,
    max_rank,
    node_tensors,
    op_name,
    output_tensors,
    output_used,
    used_outputs,
    vals,
)
from delegate_sdk.support.table import ClaimTable, NodeLimits, OpSpec, Reject, Rule, RuleContext, SupportRules, folded_constants

__all__ = [
    "PYTHON_SCALAR_OPS", "ClaimTable", "NodeLimits", "OpSpec", "Reject", "Rule", "RuleContext", "SupportRules",
    "arguments", "constant_value", "dtype_name", "dtypes_of", "folded_constants", "has_dynamic_shape",
    "has_zero_size", "input_nodes", "input_tensors", "is_constant", "max_rank", "node_tensors", "op_name",
    "output_tensors", "output_used", "static_tensors", "used_outputs", "vals", "with_hosted",
]
