"""A pytest plugin (entry point ``delegate_sdk``, active wherever delegate-sdk is installed): a plugin's quick
conformance test from one line of configuration.

In the plugin's ``pyproject.toml``::

    [tool.delegate_sdk]
    conform = ["acme -k ^op/(add|relu|conv2d)/ --min-ops 3"]

Each line becomes one test, ``conform[acme -k ...]``, that runs ``delegate-sdk conform --plugin LINE`` in a
child process exactly as a user would and fails, with the report's problems, unless the run certifies
(exit 0: no unexpected outcome, something claimed, the ``--min-pass`` / ``--min-ops`` asked for) and, when the
selection holds a model case, a model case passed. The tests are marked ``slow``, like every test that
compiles with a vendor toolchain. Under pytest-xdist, a line without ``--jobs`` runs one conform worker: the
xdist workers already use the cores.

Where the lines are read: from the ``pyproject.toml`` of pytest's rootdir, when the run collects the whole
project (``pytest`` or ``pytest <project dir>``, not ``pytest tests/test_one.py``); and from the
``pyproject.toml`` of any package directory pytest collects (a repository of several plugins:
``pytest plugins/acme`` runs acme's lines). The table is ``[tool.delegate_sdk]``, not pytest's own, so that a
package's ``pyproject.toml`` never becomes pytest's config file.
"""

from __future__ import annotations

import os
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest

class ConformItem(pytest.Item):
    def __init__(self, *, line: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.line = line
        self.add_marker(pytest.mark.slow)

    def runtest(self) -> None:
        from delegate_sdk.testing import run_conform

        words = shlex.split(self.line)
        if os.environ.get("PYTEST_XDIST_WORKER") and not any(w == "--jobs" or w.startswith("--jobs=")
                                                              for w in words):
            # pytest-xdist's workers already fill the cores: a second conform worker would only pay the
            # toolchain's start-up again (about 15 s for ExecuTorch's XNNPACK lowering)
            words.append("--jobs=1")
        report_dir = Path(self.config._tmp_path_factory.mktemp("conform"))  # type: ignore[attr-defined]
        run = run_conform(words[0], words[1:], report_dir)
        run.assert_clean(min_pass=1)
        models = [c for c in run.cases if c["kind"] == "model"]
        assert not models or any(c["outcome"] in ("PASS", "PASS_PARTIAL") for c in models), (
            f"no selected model case passed: {[(c['id'], c['outcome']) for c in models]}")

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, AssertionError):
            return f"delegate-sdk conform --plugin {self.line}\n{excinfo.value}"
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"conform[{self.line}]"


class ConformFile(pytest.File):
    """The conform lines of a package's ``pyproject.toml``."""

    def collect(self) -> Any:
        for line in _lines(self.path):
            yield ConformItem.from_parent(self, name=f"conform[{line}]", line=line)


def _lines(pyproject: Path) -> list[str]:
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return []
    lines = data.get("tool", {}).get("delegate_sdk", {}).get("conform", [])
    return [str(x).strip() for x in lines if str(x).strip()]


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    root = Path(parent.config.rootpath) / "pyproject.toml"
    if file_path.name == "pyproject.toml" and file_path != root and _lines(file_path):
        return ConformFile.from_parent(parent, path=file_path)
    return None


def _collects_the_project(config: pytest.Config) -> bool:
    if config.args_source != pytest.Config.ArgsSource.ARGS:
        return True  # no paths given: the configured testpaths, or the invocation directory
    root = Path(config.rootpath)
    return any(Path(a.split("::")[0]).resolve() in (root, *root.parents) for a in config.args)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    # added before -k / -m deselection runs (tryfirst), so `-m "not slow"` skips them like other slow tests
    if not _collects_the_project(config):
        return
    for line in _lines(Path(config.rootpath) / "pyproject.toml"):
        items.append(ConformItem.from_parent(session, name=f"conform[{line}]", line=line))
