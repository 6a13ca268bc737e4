"""A pytest plugin (entry point ``delegate_sdk``, active wherever delegate-sdk is installed): a plugin's quick
conformance test from one line of configuration.

In the plugin's ``pyproject.toml``::

    [tool.pytest.ini_options]
    delegate_sdk_conform = ["acme -k ^op/(add|relu|conv2d)/ --min-ops 3"]

Each line becomes one test, ``conform[acme -k ...]``, that runs ``delegate-sdk conform --plugin LINE`` in a
child process exactly as a user would and fails, with the report's problems, unless the run certifies
(exit 0: no unexpected outcome, something claimed, the ``--min-pass`` / ``--min-ops`` asked for). The tests
are marked ``slow``, like every test that compiles with a vendor toolchain.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest

INI = "delegate_sdk_conform"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(INI, "delegate-sdk conform runs, one per line: PLUGIN [conform options]", type="linelist",
                  default=[])


class ConformItem(pytest.Item):
    def __init__(self, *, line: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.line = line
        self.add_marker(pytest.mark.slow)

    def runtest(self) -> None:
        from delegate_sdk.testing import run_conform

        words = shlex.split(self.line)
        report_dir = Path(self.config._tmp_path_factory.mktemp("conform"))  # type: ignore[attr-defined]
        run = run_conform(words[0], words[1:], report_dir)
        run.assert_clean(min_pass=1)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, AssertionError):
            return f"delegate-sdk conform --plugin {self.line}\n{excinfo.value}"
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"conform[{self.line}]"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    # added before -k / -m deselection runs (tryfirst), so `-m "not slow"` skips them like other slow tests
    for line in config.getini(INI):
        line = line.strip()
        if line:
            items.append(ConformItem.from_parent(session, name=f"conform[{line}]", line=line))
