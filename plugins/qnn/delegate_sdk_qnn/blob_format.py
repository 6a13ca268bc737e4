"""The qnn blob format: what ``preprocess`` stores where, and how ``init`` reads every loadable version back.

Version 3 (written now) uses the core's blob sections instead of a container of our own:

    blob                the EPContext ONNX model, QNN context binary embedded (what ``init`` loads);
                        for a weight-only partition (meta ``constant``), its outputs folded at compile time,
                        raw little-endian bytes back to back in output order (dtypes and shapes are in meta)
    section "qdq.onnx"  the QDQ ONNX model (quantized precisions only), the fake-quant reference that
                        ``reference_execute`` runs on the ORT CPU provider

meta carries ``format_version`` and the ``sections`` the blob needs, so that a missing one is named instead of
silently skipping the reference.

Versions 1 and 2 (a partition with hosted ops: meta ``cpu_nodes``) packed the same parts into one blob
behind a magic header; their meta has no ``format_version``. Layout (little-endian)::

    b"DSDKQNN\\0", u32 container version (1), u32 section count,
    per section: u16 name length, name (UTF-8), u64 payload length, payload
    sections "ctx" (EPContext model), "qdq" (QDQ model), or "const" alone (folded outputs)

That reader stays so that artifacts saved by older versions of this plugin still load; nothing writes it.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: the delegate-sdk blob format name and version this plugin emits (BackendInfo / CompiledDelegate)
BLOB_FORMAT = "qnn-epcontext"
#: 3: parts in the core's blob sections; 2: hosted ops (meta ``cpu_nodes``); 1: the first container
BLOB_FORMAT_VERSION = 3
LOADABLE_FORMAT_VERSIONS = (1, BLOB_FORMAT_VERSION)

QDQ_SECTION = "qdq.onnx"

_LEGACY_MAGIC = b"DSDKQNN\0"
_LEGACY_CONTAINER_VERSION = 1


class BlobFormatError(ValueError):
    """The bytes are not a QNN blob this runtime can read."""


@dataclass(frozen=True)
class BlobParts:
    """A blob of any loadable version, read: exactly one of ``context`` / ``constants`` is set."""

    context: bytes | None
    qdq: bytes | None
    constants: bytes | None


def format_meta(sections: Mapping[str, bytes]) -> dict[str, Any]:
    """The meta entries that give a blob's format version (3) and the sections it needs."""
    return {"format_version": BLOB_FORMAT_VERSION, "sections": sorted(sections)}


def read(blob: bytes, meta: Mapping[str, Any], sections: Mapping[str, bytes]) -> BlobParts:
    """The parts of a blob as ``init`` got it; :class:`BlobFormatError` naming what is wrong or missing."""
    version = meta.get("format_version")
    if version is None:  # versions 1 and 2 wrote no format_version into meta
        return _read_legacy(blob, meta)
    if version != BLOB_FORMAT_VERSION:
        raise BlobFormatError(f"blob meta says format version {version!r}; this runtime reads "
                              f"{LOADABLE_FORMAT_VERSIONS[0]}-{LOADABLE_FORMAT_VERSIONS[1]}")
    missing = [name for name in meta.get("sections", []) if name not in sections]
    if missing:
        raise BlobFormatError(f"the blob's section(s) {missing} were not given to init; the artifact is "
                              "incomplete (re-lower the model)")
    if meta.get("constant"):
        return BlobParts(None, None, bytes(blob))
    if not blob:
        raise BlobFormatError("the blob holds no EPContext model")
    return BlobParts(bytes(blob), sections.get(QDQ_SECTION), None)


def _read_legacy(blob: bytes, meta: Mapping[str, Any]) -> BlobParts:
    parts = _unpack_legacy(blob)
    if "const" in parts:
        return BlobParts(None, None, parts["const"])
    if "ctx" not in parts:
        raise BlobFormatError("blob has no EPContext section")
    return BlobParts(parts["ctx"], parts.get("qdq"), None)


def _unpack_legacy(blob: bytes) -> dict[str, bytes]:
    # every length is bounds-checked: a truncated artifact must raise here, not reach native code
    view = memoryview(blob)
    if len(view) < 16 or bytes(view[:8]) != _LEGACY_MAGIC:
        raise BlobFormatError("not a delegate-sdk QNN blob (bad magic)")
    version, count = struct.unpack_from("<II", view, 8)
    if version != _LEGACY_CONTAINER_VERSION:
        raise BlobFormatError(f"QNN blob container version {version} is not supported "
                              f"(this runtime reads version {_LEGACY_CONTAINER_VERSION})")
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
