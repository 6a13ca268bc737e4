"""errors.brief: one actionable line from a toolchain exception, however it is formatted."""

from __future__ import annotations

from delegate_sdk.errors import UsageError, brief


def test_brief_is_one_line_with_the_type_and_no_colour_codes() -> None:
    assert brief(ValueError("\x1b[31mshape mismatch\x1b[0m\n  at line 3\n  ...")) == "ValueError: shape mismatch"
    assert brief(UsageError("the model takes 2 inputs")) == "the model takes 2 inputs"  # ours: no type prefix
    assert brief(RuntimeError("")) == "RuntimeError"
    long = brief(RuntimeError("x" * 1000), 50)
    assert len(long) == 50 and long.endswith("...")
