"""The blob: a saved ``.mlpackage`` directory packed into bytes, and back.

An ``.mlpackage`` is a directory (``Manifest.json``, ``Data/com.apple.CoreML/
model.mlmodel``, ``.../weights/weight.bin``). The blob is a zip of it with
sorted entries, fixed timestamps and permissions, so the same package always
gives the same bytes; :func:`normalize_package` also removes what coremltools
makes different on every save (random item identifiers in the manifest, the
conversion date in the model's metadata).
"""

from __future__ import annotations

import io
import json
import uuid
import zipfile
from pathlib import Path

from delegate_sdk_coreml.mil_errors import MILError
from delegate_sdk_coreml.mil_reader import proto_module

PACKAGE_DIR = "model.mlpackage"
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)
_NAMESPACE = uuid.UUID("6f1d1d4c-2f0e-4c53-9a57-8d0f6e6c0a11")
#: sanity bound for unpacking (a corrupt or hostile zip must not fill the disk)
MAX_UNPACKED_BYTES = 4 << 30


def normalize_package(package: Path) -> None:
    """Make a freshly saved package deterministic: stable manifest identifiers, no conversion date."""
    manifest_path = package / "Manifest.json"
    manifest = json.loads(manifest_path.read_text())
    entries = manifest.get("itemInfoEntries", {})
    renamed = {}
    for old, item in entries.items():
        renamed[old] = str(uuid.uuid5(_NAMESPACE, item.get("path", old))).upper()
    manifest["itemInfoEntries"] = {renamed[k]: v for k, v in sorted(entries.items(), key=lambda kv: renamed[kv[0]])}
    if manifest.get("rootModelIdentifier") in renamed:
        manifest["rootModelIdentifier"] = renamed[manifest["rootModelIdentifier"]]
    manifest_path.write_text(json.dumps(manifest, indent=4, sort_keys=True) + "\n")
    root = manifest["itemInfoEntries"][manifest["rootModelIdentifier"]]
    model_path = package / "Data" / root["path"]
    spec = proto_module("Model_pb2").Model()
    spec.ParseFromString(model_path.read_bytes())
    user = spec.description.metadata.userDefined
    if "com.github.apple.coremltools.conversion_date" in user:
        del user["com.github.apple.coremltools.conversion_date"]
    model_path.write_bytes(spec.SerializeToString(deterministic=True))


def pack(package: Path) -> bytes:
    """Zip a package directory deterministically."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for path in sorted(p for p in package.rglob("*") if p.is_file()):
            rel = path.relative_to(package).as_posix()
            info = zipfile.ZipInfo(f"{PACKAGE_DIR}/{rel}", date_time=_FIXED_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, path.read_bytes())
    return buf.getvalue()


def unpack(blob: bytes, dest: Path) -> Path:
    """Unzip a blob into ``dest``; returns the path of the package directory. Raises MILError on a bad blob."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(blob))
    except zipfile.BadZipFile as e:
        raise MILError(f"the Core ML blob is not a packed .mlpackage: {e}") from None
    with zf:
        total = 0
        for info in zf.infolist():
            name = info.filename
            if not name.startswith(f"{PACKAGE_DIR}/") or ".." in Path(name).parts or name.startswith("/"):
                raise MILError(f"the Core ML blob holds an unexpected entry {name!r}")
            total += info.file_size
            if total > MAX_UNPACKED_BYTES:
                raise MILError("the Core ML blob unpacks to more than 4 GiB")
        try:
            bad = zf.testzip()
        except Exception as e:  # zlib errors surface with various types
            raise MILError(f"the Core ML blob is corrupt: {e}") from None
        if bad is not None:
            raise MILError(f"the Core ML blob is corrupt (entry {bad})")
        zf.extractall(dest)
    package = dest / PACKAGE_DIR
    if not (package / "Manifest.json").is_file():
        raise MILError("the Core ML blob has no Manifest.json")
    return package
