"""Vela 5.2 / TOSA level-8K limits shared by the claim rules and the lowering.

The rules refuse what breaks them; the lowering picks its form by them (a mean
over H, W is one AVG_POOL2D only within the pooling limits). One place, so the
two can never disagree.
"""

from __future__ import annotations

MAX_RANK = 6  # TOSA level 8K
MAX_CHANNELS = 65536
CONV_MAX_KH = 64
CONV_MAX_KAREA = 4096
# Vela bounds the sum of absolute weights per output channel by 127 * 65536
CONV_MAX_WEIGHTS_PER_CHANNEL = 65536
MAX_STRIDE = 3
POOL_MAX_PADDED_KERNEL = 8
POOL_MAX_KH = 256
POOL_MAX_KAREA = 65536
AXIS_MAX = 65536
RESIZE_U55_FACTORS = (2, 4, 8)
RESIZE_MAX_FACTOR = 64
# a sum over more elements than this may overflow the int32 accumulator
REDUCE_MAX_ELEMENTS = 2**23
