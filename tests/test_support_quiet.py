"""delegate_sdk.support.quiet: a toolchain's output never reaches the terminal, and is not lost."""

from __future__ import annotations

import logging
import os
import warnings

from delegate_sdk.support.quiet import quiet


def test_everything_a_toolchain_prints_is_captured_and_kept(capfd, caplog) -> None:
    log = logging.getLogger("dsdk.test.quiet")
    root_handlers = list(logging.getLogger().handlers)
    with caplog.at_level(logging.DEBUG, logger="dsdk.test.quiet"):
        with quiet(log, loggers=("dsdk.noisy",)) as out:
            print("progress 50%")
            os.write(2, b"native banner\n")
            warnings.warn("untested torch version")
            logging.getLogger("dsdk.noisy").warning("a toolchain logger talks")
            logging.basicConfig()  # what some toolchains do at import
    term_out, term_err = capfd.readouterr()
    assert term_out == "" and term_err == ""
    assert "progress 50%" in out.text and "native banner" in out.text
    assert out.warnings == ["untested torch version"]
    assert logging.getLogger().handlers == root_handlers
    logged = caplog.text
    assert "a toolchain logger talks" in logged and "native banner" in logged
    print("after")
    assert capfd.readouterr().out == "after\n"  # the terminal is back
