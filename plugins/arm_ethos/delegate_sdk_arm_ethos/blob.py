"""The blob: the TOSA 1.0 graph plus Vela's raw output (command stream, weights, I/O layout).

Layout: 8-byte magic, little-endian u32 format version, u32 header length, a
JSON header naming each section's offset and length, then the sections.
No pickle anywhere; Vela's ``.npz`` is read with ``allow_pickle=False``.
"""

from __future__ import annotations

import json
import struct
from typing import Any

MAGIC = b"DSDKETHU"
FORMAT = "tosa1.0+vela-raw"
FORMAT_VERSION = 1
_HEAD = struct.Struct("<8sII")


class BlobError(ValueError):
    pass


def pack(sections: dict[str, bytes], info: dict[str, Any]) -> bytes:
    offsets: dict[str, list[int]] = {}
    pos = 0
    for name, data in sections.items():
        offsets[name] = [pos, len(data)]
        pos += len(data)
    header = json.dumps({"sections": offsets, "info": info}, sort_keys=True).encode()
    return _HEAD.pack(MAGIC, FORMAT_VERSION, len(header)) + header + b"".join(sections.values())


def unpack(blob: bytes) -> tuple[dict[str, bytes], dict[str, Any]]:
    if len(blob) < _HEAD.size:
        raise BlobError("blob is truncated (shorter than its header)")
    magic, version, hlen = _HEAD.unpack_from(blob)
    if magic != MAGIC:
        raise BlobError("not an arm_ethos blob (bad magic)")
    if version != FORMAT_VERSION:
        raise BlobError(f"blob format version {version} is not supported (this runtime reads {FORMAT_VERSION})")
    start = _HEAD.size + hlen
    if len(blob) < start:
        raise BlobError("blob is truncated (header)")
    try:
        header = json.loads(blob[_HEAD.size:start])
    except ValueError as e:
        raise BlobError(f"blob header is corrupt: {e}") from None
    body = memoryview(blob)[start:]
    sections: dict[str, bytes] = {}
    for name, (off, n) in header["sections"].items():
        if off + n > len(body):
            raise BlobError(f"blob is truncated (section {name})")
        sections[name] = bytes(body[off:off + n])
    return sections, header.get("info", {})
