"""The blob format: what ``preprocess`` stores and ``init`` / ``reference_execute`` read back.

Version 2 (written now): the blob is the TOSA 1.0 flatbuffer itself; Vela's raw
output (command stream, weights, scratch size, I/O layout) and the fake-quant
reference (graph JSON + constants ``.npz``) are the core's named sections, which
the artifact stores once by content, so equal partitions share them. ``meta``
lists the sections the blob needs.

Version 1 (still read): one container holding all four, an 8-byte magic,
little-endian u32 format version, u32 header length, a JSON header naming each
part's offset and length, then the parts. No pickle in either version.
"""

from __future__ import annotations

import json
import struct
from typing import Any

FORMAT = "tosa1.0+vela-raw"
FORMAT_VERSION = 2
LOADABLE_VERSIONS = (1, 2)

VELA = "vela.npz"
REF_GRAPH = "ref_graph.json"
REF_CONSTS = "ref_consts.npz"

_V1_MAGIC = b"DSDKETHU"
_V1_HEAD = struct.Struct("<8sII")
# the version-1 container's part names, in the names of version 2
_V1_PARTS = {"vela_npz": VELA, "ref_graph": REF_GRAPH, "ref_consts": REF_CONSTS}


class BlobError(ValueError):
    pass


def read(blob: bytes, meta: dict[str, Any], sections: dict[str, bytes]) -> tuple[bytes, dict[str, bytes]]:
    """The TOSA graph and the named sections of a blob of either version.

    Raises :class:`BlobError` naming what is missing or corrupt, before any of it
    reaches the reference model (a native loader fed a bad graph crashes).
    """
    if blob[:len(_V1_MAGIC)] == _V1_MAGIC:
        parts = _read_v1(blob)
        if "tosa" not in parts:
            raise BlobError("blob has no TOSA graph")
        return parts.pop("tosa"), {_V1_PARTS.get(k, k): v for k, v in parts.items()}
    missing = [name for name in meta.get("sections", []) if name not in sections]
    if missing:
        raise BlobError(f"the artifact lacks the blob's section(s) {', '.join(missing)}")
    if len(blob) < 8 or blob[4:8] != b"TOSA":
        raise BlobError("not an arm_ethos blob (neither a TOSA flatbuffer nor a version-1 container)")
    return blob, dict(sections)


def _read_v1(blob: bytes) -> dict[str, bytes]:
    if len(blob) < _V1_HEAD.size:
        raise BlobError("blob is truncated (shorter than its header)")
    _, version, hlen = _V1_HEAD.unpack_from(blob)
    if version != 1:
        raise BlobError(f"blob container version {version} is not supported (this runtime reads 1)")
    start = _V1_HEAD.size + hlen
    if len(blob) < start:
        raise BlobError("blob is truncated (header)")
    try:
        header = json.loads(blob[_V1_HEAD.size:start])
    except ValueError as e:
        raise BlobError(f"blob header is corrupt: {e}") from None
    body = memoryview(blob)[start:]
    parts: dict[str, bytes] = {}
    for name, (off, n) in header["sections"].items():
        if off + n > len(body):
            raise BlobError(f"blob is truncated (section {name})")
        parts[name] = bytes(body[off:off + n])
    return parts
