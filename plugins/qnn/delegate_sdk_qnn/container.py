"""The QNN blob container: a few named byte sections behind a magic header.

Layout (all integers little-endian)::

    b"DSDKQNN\\0"                 8-byte magic
    u32 container version         (CONTAINER_VERSION)
    u32 section count
    per section:
        u16 name length, name (UTF-8)
        u64 payload length, payload

Sections written by the compiler:

    "ctx"   the EPContext ONNX model, QNN context binary embedded (what ``init`` loads)
    "qdq"   the QDQ ONNX model (quantized precisions only), run on the ORT CPU provider
            by ``reference_execute`` as the fake-quant reference
    "const" instead of both, for a partition with no runtime inputs (it only transforms
            weights): its outputs, folded at compile time, as raw little-endian bytes
            back to back in output order (dtypes and shapes are in meta)

Chosen over zip/pickle because it is trivial to parse defensively (every length is
bounds-checked) and never executes anything while loading.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

#: the delegate-sdk blob format name and version this plugin emits (BackendInfo / CompiledDelegate)
BLOB_FORMAT = "qnn-epcontext"
#: 2: a partition with hosted ops holds CPU-provider nodes beside its EPContext nodes (meta ``cpu_nodes``)
BLOB_FORMAT_VERSION = 2

MAGIC = b"DSDKQNN\0"
CONTAINER_VERSION = 1

SECTION_CONTEXT = "ctx"
SECTION_QDQ = "qdq"
SECTION_CONST = "const"


class BlobFormatError(ValueError):
    """The bytes are not a QNN blob this runtime can read."""


def pack(sections: Mapping[str, bytes]) -> bytes:
    """Serialise ``sections`` (name -> payload) into one blob."""
    parts = [MAGIC, struct.pack("<II", CONTAINER_VERSION, len(sections))]
    for name, payload in sections.items():
        raw = name.encode("utf-8")
        if len(raw) > 0xFFFF:
            raise ValueError(f"section name too long: {name[:40]!r}...")
        parts += [struct.pack("<H", len(raw)), raw, struct.pack("<Q", len(payload)), bytes(payload)]
    return b"".join(parts)


def unpack(blob: bytes) -> dict[str, bytes]:
    """Parse a blob written by :func:`pack`; raises :class:`BlobFormatError` naming what is wrong."""
    view = memoryview(blob)
    if len(view) < 16 or bytes(view[:8]) != MAGIC:
        raise BlobFormatError("not a delegate-sdk QNN blob (bad magic)")
    version, count = struct.unpack_from("<II", view, 8)
    if version != CONTAINER_VERSION:
        raise BlobFormatError(f"QNN blob container version {version} is not supported "
                              f"(this runtime reads version {CONTAINER_VERSION})")
    pos = 16
    out: dict[str, bytes] = {}
    for i in range(count):
        if pos + 2 > len(view):
            raise BlobFormatError(f"QNN blob truncated in the header of section {i}")
        (nlen,) = struct.unpack_from("<H", view, pos)
        pos += 2
        if pos + nlen + 8 > len(view):
            raise BlobFormatError(f"QNN blob truncated in the header of section {i}")
        name = bytes(view[pos:pos + nlen]).decode("utf-8", errors="replace")
        pos += nlen
        (plen,) = struct.unpack_from("<Q", view, pos)
        pos += 8
        if pos + plen > len(view):
            raise BlobFormatError(f"QNN blob truncated in section {name!r} "
                                  f"(needs {plen} bytes, {len(view) - pos} left)")
        out[name] = bytes(view[pos:pos + plen])
        pos += plen
    if pos != len(view):
        raise BlobFormatError(f"QNN blob has {len(view) - pos} unexpected trailing bytes")
    return out
