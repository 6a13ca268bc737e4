"""``delegate-sdk new-plugin NAME``: write an out-of-tree plugin package that passes conformance as written.

The template (``template/``, package data) is a small but real backend: partitions compiled to ONNX by one
emitter per op and run on ONNX Runtime's CPU provider, with its claim table, tests using the plugin kit,
expectations and README. Placeholders: ``{{name}}`` (backend name), ``{{package}}`` (Python package),
``{{dist}}`` (distribution name).
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from delegate_sdk.errors import UsageError

_NAME = re.compile(r"^[a-z][a-z0-9_]{1,30}$")


@dataclass(frozen=True)
class Scaffold:
    """Where a new plugin was written and what to run next."""

    root: Path
    files: tuple[Path, ...]
    name: str


def new_plugin(name: str, directory: Path | str = ".") -> Scaffold:
    """Write the package ``delegate-sdk-NAME`` into ``directory/NAME``; refuses to overwrite anything."""
    if not _NAME.match(name) or keyword.iskeyword(name):
        raise UsageError(f"plugin name {name!r} must be 2-31 characters of lower-case letters, digits and _, "
                         "starting with a letter (it is the backend name users type and part of the package name)")
    package = f"delegate_sdk_{name}"
    dist = f"delegate-sdk-{name.replace('_', '-')}"
    root = Path(directory) / name
    if root.exists():
        raise UsageError(f"{root} already exists; choose another --dir or remove it")
    values = {"{{name}}": name, "{{package}}": package, "{{dist}}": dist}
    template = resources.files("delegate_sdk.scaffold") / "template"
    written: list[Path] = []
    for src, rel in _walk(template):
        target = root / rel.replace("package/", f"{package}/").removesuffix(".tmpl")
        target = target.with_name(target.name.replace("test_plugin.py", f"test_{name}.py"))
        text = src.read_text(encoding="utf-8")
        for key, value in values.items():
            text = text.replace(key, value)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        written.append(target)
    return Scaffold(root, tuple(written), name)


def _walk(node, prefix: str = ""):  # type: ignore[no-untyped-def]
    for child in sorted(node.iterdir(), key=lambda c: c.name):
        rel = f"{prefix}{child.name}"
        if child.is_dir():
            yield from _walk(child, rel + "/")
        elif child.name.endswith(".tmpl"):
            yield child, rel
