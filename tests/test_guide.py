"""docs/writing-a-plugin.md is the vendor's walkthrough: every hook and every public kit function is in it,
and every ``python`` block runs (in order, in one namespace, as a reader would paste them)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from delegate_sdk import testing
from delegate_sdk.registry import hook_names

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "writing-a-plugin.md"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", GUIDE.read_text(), flags=re.S)


@pytest.mark.parametrize("hook", hook_names())
def test_every_hook_is_documented(hook: str) -> None:
    assert f"`{hook}" in GUIDE.read_text(), f"the guide does not mention the {hook} hook"


@pytest.mark.parametrize("name", testing.__all__)
def test_every_kit_name_is_documented(name: str) -> None:
    assert name in GUIDE.read_text(), f"the guide does not mention delegate_sdk.testing.{name}"


def test_the_guide_code_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = _blocks("python")
    assert len(blocks) >= 4
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "guide"}
    for i, code in enumerate(blocks):
        exec(compile(code, f"{GUIDE.name}[python block {i}]", "exec"), namespace)  # noqa: S102


def test_the_guide_pytest_config_is_the_scaffolds() -> None:
    (toml,) = _blocks("toml")
    assert toml.startswith("[tool.delegate_sdk]\nconform = [")
    template = Path(__file__).resolve().parents[1] / "delegate_sdk" / "scaffold" / "template" / "pyproject.toml.tmpl"
    assert "[tool.delegate_sdk]\nconform = [" in template.read_text()
