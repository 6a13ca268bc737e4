"""The single-file artifact: round trip, integrity checks, versions, no unpickling."""

from __future__ import annotations

import json
import pickle
import shutil
import zipfile
from pathlib import Path

import pytest
import torch

from delegate_sdk.errors import (
    ArtifactCorruptError,
    ArtifactError,
    ArtifactVersionError,
    BackendUnavailableError,
    MissingPluginError,
)
from delegate_sdk.lowering import lower
from delegate_sdk.program import load
from delegate_sdk.registry import Registry
from dsdk_test_plugins.ir_backend import ELEMENTWISE, LINEAR, IRBackend
from dsdk_test_plugins.models import small_cnn


@pytest.fixture
def saved(registry, tmp_path):
    registry.register(IRBackend("lin", LINEAR), "lin")
    registry.register(IRBackend("elem", ELEMENTWISE), "elem")
    model, (x,) = small_cnn()
    prog = lower(model, (x,), ["lin", "elem"], registry=registry)
    path = tmp_path / "m.dsdk"
    prog.save(path)
    return registry, model, x, path


def _rewrite(path: Path, edit) -> None:
    with zipfile.ZipFile(path) as z:
        entries = {n: z.read(n) for n in z.namelist()}
    edit(entries)
    with zipfile.ZipFile(path, "w") as z:
        for n, d in entries.items():
            z.writestr(n, d)


def test_round_trip_matches_eager_and_creates_handles_once(saved):
    registry, model, x, path = saved
    lin = registry.get("lin").plugin
    before = lin.inits
    prog = load(path, registry)
    n_lin = sum(1 for p in prog.summary().partitions if p.backend == "lin")
    assert lin.inits - before == n_lin
    for _ in range(3):
        torch.testing.assert_close(prog(x), model(x), rtol=0, atol=0)
    assert lin.inits - before == n_lin  # calls reuse the handles
    m = json.loads(zipfile.ZipFile(path).read("manifest.json"))
    assert m["torch_version"] == torch.__version__ and m["plugins"] == {"lin": "0.0-test", "elem": "0.0-test"}
    assert all(len(h) == 64 for h in m["sha256"].values())
    assert [p["id"] for p in m["partitions"]] == [p.id for p in prog.summary().partitions]
    prog.close()
    assert lin.destroyed >= n_lin


def test_not_an_artifact(tmp_path, registry):
    p = tmp_path / "x.dsdk"
    p.write_bytes(b"hello, not a zip")
    with pytest.raises(ArtifactCorruptError, match="corrupt or truncated, or not a delegate-sdk artifact"):
        load(p, registry)
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("something.txt", "x")
    with pytest.raises(ArtifactCorruptError, match="no manifest.json"):
        load(p, registry)
    with pytest.raises(ArtifactError, match="no artifact at"):
        load(tmp_path / "missing.dsdk", registry)


def test_truncated(saved):
    registry, _, _, path = saved
    data = path.read_bytes()
    for cut in (len(data) // 3, len(data) - 10):
        path.write_bytes(data[:cut])
        with pytest.raises(ArtifactCorruptError):
            load(path, registry)


def test_flipped_blob_byte_is_caught_by_hash(saved):
    registry, _, _, path = saved

    def flip(e):
        b = bytearray(e["blobs/p0.bin"])
        b[len(b) // 2] ^= 0xFF
        e["blobs/p0.bin"] = bytes(b)
    _rewrite(path, flip)
    with pytest.raises(ArtifactCorruptError, match="SHA-256 of blobs/p0.bin does not match"):
        load(path, registry)


def test_malicious_pickle_is_never_executed(saved, tmp_path):
    registry, model, x, path = saved
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    payload = pickle.dumps(Evil())
    # as an extra entry, as the weights file (with its hash updated), and as a torch-style data.pkl
    def plant(e):
        e["data.pkl"] = payload
        e["weights.bin"] = payload
        m = json.loads(e["manifest.json"])
        import hashlib

        m["sha256"]["weights.bin"] = hashlib.sha256(payload).hexdigest()
        e["manifest.json"] = json.dumps(m).encode()
    clean = tmp_path / "clean.dsdk"
    shutil.copy(path, clean)
    _rewrite(path, plant)
    # a weights file that is a pickle is not weights: refused by the reader, which never unpickles
    with pytest.raises(ArtifactCorruptError):
        load(path, registry)
    assert not marker.exists()
    # and an unknown extra entry alone (data.pkl) is ignored, never loaded: the program still runs
    _rewrite(clean, lambda e: e.__setitem__("data.pkl", payload))
    torch.testing.assert_close(load(clean, registry)(x), model(x))
    assert not marker.exists()


def test_unknown_op_in_graph_is_rejected(saved):
    registry, _, _, path = saved

    def edit(e):
        g = json.loads(e["graph.json"])
        g["nodes"].append({"name": "evil", "op": "os.system", "args": ["true"], "kwargs": {}})
        e["graph.json"] = json.dumps(g).encode()
        m = json.loads(e["manifest.json"])
        import hashlib

        m["sha256"]["graph.json"] = hashlib.sha256(e["graph.json"]).hexdigest()
        e["manifest.json"] = json.dumps(m).encode()
    _rewrite(path, edit)
    with pytest.raises(ArtifactCorruptError, match="'os.system', which is not an allowed torch op"):
        load(path, registry)


def test_missing_plugin(saved):
    _, _, _, path = saved
    only_elem = Registry(load_entry_points=False, load_env=False)
    only_elem.register(IRBackend("elem", ELEMENTWISE), "elem")
    with pytest.raises(MissingPluginError, match=r"needs the 'lin' plugin .* pip install delegate-sdk-lin"):
        load(path, only_elem)


def test_blob_format_version_out_of_range(saved):
    _, _, _, path = saved
    newer = Registry(load_entry_points=False, load_env=False)
    newer.register(IRBackend("lin", LINEAR, format_version=3, loadable=(2, 3)), "lin")
    newer.register(IRBackend("elem", ELEMENTWISE), "elem")
    with pytest.raises(ArtifactVersionError, match=r"holds a dsdk-test-ir v1 blob .* loads dsdk-test-ir v2..v3"):
        load(path, newer)


def test_artifact_format_version(saved):
    registry, _, _, path = saved

    def edit(e):
        m = json.loads(e["manifest.json"])
        m["format_version"] = 99
        e["manifest.json"] = json.dumps(m).encode()
    _rewrite(path, edit)
    with pytest.raises(ArtifactVersionError, match="format version 99"):
        load(path, registry)


def test_unavailable_backend_at_load(saved):
    _, _, _, path = saved
    reg = Registry(load_entry_points=False, load_env=False)
    reg.register(IRBackend("lin", LINEAR, available=False), "lin")
    reg.register(IRBackend("elem", ELEMENTWISE), "elem")
    with pytest.raises(BackendUnavailableError, match="TestChip"):
        load(path, reg)


def test_save_is_atomic_and_weights_stored_once(registry, tmp_path):
    registry.register(IRBackend("elem", ELEMENTWISE), "elem")
    model, (x,) = small_cnn()
    prog = lower(model, (x,), ["elem"], registry=registry)
    path = tmp_path / "m.dsdk"
    prog.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["m.dsdk"]
    m = json.loads(zipfile.ZipFile(path).read("manifest.json"))
    names = [w["name"] for w in m["weights"]]
    assert len(names) == len(set(names))
    total = sum(w["nbytes"] for w in m["weights"])
    assert len(zipfile.ZipFile(path).read("weights.bin")) == total
    torch.testing.assert_close(load(path, registry)(x), model(x), rtol=0, atol=0)


class _SharedLinear(torch.nn.Module):
    """One Linear used on both sides of an op the backend refuses: two partitions holding the same weights."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.sin(self.fc(x)))


def test_equal_sections_of_two_partitions_are_stored_once(registry, tmp_path):
    registry.register(IRBackend("lin", LINEAR), "lin")
    model, x = _SharedLinear().eval(), torch.randn(2, 16)
    prog = lower(model, (x,), ["lin"], registry=registry, min_benefit=False)
    path = tmp_path / "m.dsdk"
    prog.save(path)
    with zipfile.ZipFile(path) as z:
        stored = [n for n in z.namelist() if n.startswith("sections/")]
        manifest = json.loads(z.read("manifest.json"))
    shas = [p["sections"]["weights"] for p in manifest["partitions"]]
    assert len(shas) == 2 and shas[0] == shas[1]
    assert stored == [f"sections/{shas[0]}.bin"]
    with torch.no_grad():
        torch.testing.assert_close(load(path, registry)(x), model(x), rtol=0, atol=0)

    def drop(entries):
        del entries[stored[0]]
    _rewrite(path, drop)
    with pytest.raises(ArtifactCorruptError, match="missing sections/"):
        load(path, registry)


def test_a_section_that_is_not_bytes_is_a_contract_error(registry):
    from delegate_sdk import hookimpl
    from delegate_sdk.errors import ContractError

    class BadSections(IRBackend):
        @hookimpl
        def preprocess(self, program, options, calibration):
            cd = super().preprocess(program, options, calibration)
            cd.sections = {"weights": "not bytes"}
            return cd

    registry.register(BadSections("lin", LINEAR), "lin")
    with pytest.raises(ContractError, match="sections must map non-empty names to bytes"):
        lower(_SharedLinear().eval(), (torch.randn(2, 16),), ["lin"], registry=registry)
