"""numpy implementations of MIL ops, one registry for all (:mod:`.registry`), grouped by op family.

Importing this package imports every family module, which registers its
kernels; :func:`lookup` and :func:`implemented_ops` then see all of them.
"""

from delegate_sdk_coreml.mil_kernels import (  # noqa: F401  (imported to register their kernels)
    convolution,
    elementwise,
    indexing,
    layout,
    linalg,
    normalization,
    pooling,
    reductions,
    resampling,
    sorting,
)
from delegate_sdk_coreml.mil_kernels.registry import (
    Args,
    Kernel,
    Registered,
    implemented_ops,
    kernel,
    lookup,
)

__all__ = ["Args", "Kernel", "Registered", "implemented_ops", "kernel", "lookup"]
