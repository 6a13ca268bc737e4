"""The blob format: version 2 (TOSA graph + the core's shared sections) and version-1 blobs still loading."""

from __future__ import annotations

import json
import struct

import pytest
import torch
import torch.nn as nn

from delegate_sdk_arm_ethos import blob as blobfmt
from delegate_sdk_arm_ethos import plugin


def write_v1(tosa: bytes, sections: dict[str, bytes], info: dict) -> bytes:
    """A blob exactly as format version 1 wrote it (the container the plugin used before the core's sections)."""
    parts = {"tosa": tosa, "vela_npz": sections[blobfmt.VELA], "ref_graph": sections[blobfmt.REF_GRAPH],
             "ref_consts": sections[blobfmt.REF_CONSTS]}
    offsets, pos = {}, 0
    for name, data in parts.items():
        offsets[name] = [pos, len(data)]
        pos += len(data)
    header = json.dumps({"sections": offsets, "info": info}, sort_keys=True).encode()
    return struct.pack("<8sII", b"DSDKETHU", 1, len(header)) + header + b"".join(parts.values())


def v1_meta(meta: dict) -> dict:
    return {k: v for k, v in meta.items() if k != "sections"}


def test_v2_blob_is_the_tosa_graph_with_sections(exported, opts):
    ep = exported(nn.Linear(4, 3), (torch.randn(2, 4),))
    cd = plugin.preprocess(ep, opts(), [(torch.randn(2, 4),) for _ in range(3)])
    assert cd.format_version == blobfmt.FORMAT_VERSION == 2
    assert cd.blob[4:8] == b"TOSA"
    assert set(cd.sections) == set(cd.meta["sections"]) == {blobfmt.VELA, blobfmt.REF_GRAPH, blobfmt.REF_CONSTS}
    assert plugin.describe().loadable_format_versions == (1, 2)


def test_v1_blob_still_loads_and_runs_the_same(exported, opts):
    ep = exported(nn.Sequential(nn.Conv2d(2, 4, 3), nn.Hardswish()), (torch.randn(1, 2, 6, 6),))
    cd = plugin.preprocess(ep, opts(), [(torch.randn(1, 2, 6, 6),) for _ in range(3)])
    old = write_v1(cd.blob, cd.sections, {k: cd.meta[k] for k in ("target", "system_config", "memory_mode",
                                                                   "precision", "tosa_version")})
    x = [torch.randn(1, 2, 6, 6)]
    new_h = plugin.init(cd.blob, cd.meta, opts(), cd.sections)
    old_h = plugin.init(old, v1_meta(cd.meta), opts(), {})
    assert torch.equal(plugin.execute(old_h, x)[0], plugin.execute(new_h, x)[0])
    ref_old = plugin.reference_execute(old, v1_meta(cd.meta), opts(), x, {})
    ref_new = plugin.reference_execute(cd.blob, cd.meta, opts(), x, cd.sections)
    assert torch.equal(ref_old[0], ref_new[0])


def test_blob_errors_are_clear(exported, opts):
    ep = exported(nn.Linear(4, 3), (torch.randn(2, 4),))
    cd = plugin.preprocess(ep, opts(), [(torch.randn(2, 4),) for _ in range(3)])
    with pytest.raises(blobfmt.BlobError, match=blobfmt.VELA):
        blobfmt.read(cd.blob, cd.meta, {k: v for k, v in cd.sections.items() if k != blobfmt.VELA})
    with pytest.raises(blobfmt.BlobError, match="not an arm_ethos blob"):
        blobfmt.read(b"NOTABLOB" + cd.blob[8:], cd.meta, cd.sections)
    old = write_v1(cd.blob, cd.sections, {"target": "ethos-u55-128"})
    tosa, parts = blobfmt.read(old, {}, {})
    assert tosa == cd.blob and parts == cd.sections
    with pytest.raises(blobfmt.BlobError, match="truncated"):
        blobfmt.read(old[:-3], {}, {})
    with pytest.raises(blobfmt.BlobError, match="version"):
        blobfmt.read(old[:8] + (99).to_bytes(4, "little") + old[12:], {}, {})
