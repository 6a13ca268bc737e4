"""The QNN execution provider in this process: registration, availability, quiet sessions.

Shared by the compiler and the runtime; imports only onnxruntime (never the
quantization tooling or torch.onnx) so that loading a blob needs the runtime alone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from delegate_sdk.errors import brief
from delegate_sdk.support.quiet import quiet

log = logging.getLogger(__name__)

EP_NAME = "QNNExecutionProvider"

_register_lock = threading.Lock()
_registered = False

_ANSI = re.compile(r"\x1b\[[0-9;]*m|\[(?:1;31|1;33|0)?m")
_ORT_LINE = re.compile(r"\[([VIWEF]):onnxruntime:[^\]]*\]\s*(.*)")


class QnnUnavailableError(RuntimeError):
    """The QNN EP or its HTP backend cannot be used in this process."""


@dataclass
class NativeOutput:
    """What native code wrote to stdout/stderr while captured, split into ORT log records."""

    lines: list[str] = field(default_factory=list)

    def ort_messages(self, levels: str = "EF") -> list[str]:
        out = []
        for line in self.lines:
            m = _ORT_LINE.search(line)
            if m and m.group(1) in levels:
                out.append(m.group(2).strip())
        return out

    def qnn_rejections(self) -> list[str]:
        """QNN EP's per-node validation failures (logged as warnings while it partitions)."""
        keys = ("failed for node", "unsupported nodes", "validation failed", "not supported", "unsupported op")
        return [m for m in self.ort_messages("WEF") if any(k in m.lower() for k in keys)]


@contextlib.contextmanager
def captured_native_output(loggers: tuple[str, ...] = ()) -> Iterator[NativeOutput]:
    """Capture what QNN and ORT write (to fd 1/2, and Python's stdout/stderr, warnings, ``loggers``), split
    into lines for :func:`first_error`; everything is re-logged on this module's logger at DEBUG."""
    out = NativeOutput()
    with quiet(log, loggers=loggers) as captured:
        yield out
    out.lines.extend(_ANSI.sub("", ln) for ln in captured.text.splitlines() if ln.strip())


def ensure_registered() -> None:
    """Register the QNN EP plugin library with onnxruntime, once per process."""
    global _registered
    if _registered:
        return
    with _register_lock:
        if _registered:
            return
        try:
            import onnxruntime as ort
            import onnxruntime_qnn
        except ImportError as e:
            raise QnnUnavailableError(f"onnxruntime-qnn is not installed ({e}): "
                                      "pip install 'onnxruntime-qnn>=2.7,<3'") from None
        lib = onnxruntime_qnn.get_library_path()
        if not os.path.exists(lib):
            raise QnnUnavailableError(f"the QNN EP library is missing: {lib}")
        if not any(d.ep_name == EP_NAME for d in ort.get_ep_devices()):
            try:
                ort.register_execution_provider_library(EP_NAME, lib)
            except Exception as e:
                # someone else in this process may have registered it under the same name
                if not any(d.ep_name == EP_NAME for d in ort.get_ep_devices()):
                    raise QnnUnavailableError(f"could not register the QNN EP library {lib}: {e}") from None
        _registered = True


def qnn_devices() -> list[Any]:
    import onnxruntime as ort

    ensure_registered()
    devs = [d for d in ort.get_ep_devices() if d.ep_name == EP_NAME]
    if not devs:
        raise QnnUnavailableError("onnxruntime lists no QNNExecutionProvider device after registration")
    return devs


def session_options(provider_options: dict[str, str], *, log_severity: int = 3,
                    context_path: str | None = None, cpu_nodes: bool = False) -> Any:
    """SessionOptions on the QNN EP with CPU fallback disabled (a node QNN cannot run is an error), unless
    ``cpu_nodes``: a partition with hosted ops, whose hosted nodes run on ONNX Runtime's CPU provider."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = log_severity
    so.add_provider_for_devices(qnn_devices(), dict(provider_options))
    so.add_session_config_entry("session.disable_cpu_ep_fallback", "0" if cpu_nodes else "1")
    if context_path is not None:
        so.add_session_config_entry("ep.context_enable", "1")
        so.add_session_config_entry("ep.context_embed_mode", "1")
        so.add_session_config_entry("ep.context_file_path", context_path)
    return so


def versions() -> dict[str, str]:
    """onnxruntime / onnxruntime-qnn / QNN SDK versions (for meta and describe)."""
    out: dict[str, str] = {}
    try:
        import onnxruntime as ort

        out["onnxruntime"] = ort.__version__
    except ImportError:
        pass
    try:
        from onnxruntime_qnn import build_and_package_info as info

        out["onnxruntime_qnn"] = str(info.__version__)
        out["qnn_sdk"] = str(getattr(info, "qnn_version", "?"))
    except ImportError:
        pass
    return out


@lru_cache(maxsize=1)
def probe() -> tuple[bool, str]:
    """(available, reason): load the EP and open a one-node session on the HTP backend."""
    try:
        import onnxruntime as ort  # noqa: F401
        import onnxruntime_qnn
    except ImportError as e:
        return False, f"onnxruntime-qnn is not installed ({e}): pip install delegate-sdk-qnn"
    htp = onnxruntime_qnn.get_qnn_htp_path()
    if not os.path.exists(htp):
        return False, f"the QNN HTP backend library is missing: {htp}"
    try:
        ensure_registered()
        from onnx import TensorProto, helper

        g = helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"])], "probe",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 9
        err: Exception | None = None
        with captured_native_output() as native:
            try:
                ort.InferenceSession(m.SerializeToString(), session_options({"backend_type": "htp"}))
            except Exception as e:
                err = e
        if err is not None:
            return False, f"the QNN HTP backend did not load: {first_error(native, err)}"
    except QnnUnavailableError as e:
        return False, str(e)
    except Exception as e:  # describe must never raise
        return False, f"QNN EP probe failed: {type(e).__name__}: {e}"
    return True, ""


def first_error(native: NativeOutput, exc: BaseException) -> str:
    """A one-line reason for a failed ORT/QNN call: QNN's own words when it logged them."""
    rejections = native.qnn_rejections()
    if rejections:
        return "; ".join(dict.fromkeys(rejections))[:600]
    msgs = native.ort_messages()
    if msgs:
        return "; ".join(dict.fromkeys(msgs))[:600]
    return brief(exc, 600)
