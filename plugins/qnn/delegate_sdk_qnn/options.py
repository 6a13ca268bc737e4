"""Compile/runtime options of the QNN plugin and their typed form."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from delegate_sdk.types import OptionSpec

PRECISIONS: tuple[str, ...] = ("int8", "a16w8", "fp16")
DEFAULT_PRECISION = "int8"

#: SM8650 (Snapdragon 8 Gen 3, HTP v75). HTP float needs a SoC; this is a current, widely
#: shipped part whose HTP has native fp16.
DEFAULT_SOC_MODEL = 57

HTP_ARCHS: tuple[int, ...] = (0, 68, 69, 73, 75, 79, 81)
PERFORMANCE_MODES: tuple[str, ...] = (
    "default", "burst", "balanced", "high_performance", "high_power_saver", "low_balanced",
    "low_power_saver", "power_saver", "extreme_power_saver", "sustained_high_performance",
)
CALIBRATION_METHODS: tuple[str, ...] = ("minmax", "entropy", "percentile")

OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec("soc_model", "int", DEFAULT_SOC_MODEL,
               "QNN SoC model number the context binary is prepared for (57 = SM8650, 43 = SM8550, "
               "69 = SM8750, 60 = SC8380XP). HTP float (fp16) requires one.", minimum=1),
    OptionSpec("htp_arch", "int", 0,
               "Minimum HTP architecture (68, 69, 73, 75, 79, 81); 0 = derived from soc_model, "
               "which wins when both are given and disagree.", choices=HTP_ARCHS),
    OptionSpec("htp_performance_mode", "str", "burst", "HTP power/performance vote while running.",
               choices=PERFORMANCE_MODES),
    OptionSpec("calibration_method", "str", "minmax",
               "How activation ranges are chosen from the calibration inputs (quantized precisions).",
               choices=CALIBRATION_METHODS),
)


@dataclass(frozen=True)
class QnnConfig:
    """The options a QNN compile or session uses, typed."""

    precision: str = DEFAULT_PRECISION
    soc_model: int = DEFAULT_SOC_MODEL
    htp_arch: int = 0
    htp_performance_mode: str = "burst"
    calibration_method: str = "minmax"

    @classmethod
    def from_options(cls, options: dict[str, Any] | None) -> QnnConfig:
        """Build from a hook's (already validated) options dict; missing keys take defaults."""
        o = dict(options or {})
        cfg = cls(
            precision=str(o.get("precision", DEFAULT_PRECISION)),
            soc_model=int(o.get("soc_model", DEFAULT_SOC_MODEL)),
            htp_arch=int(o.get("htp_arch", 0)),
            htp_performance_mode=str(o.get("htp_performance_mode", "burst")),
            calibration_method=str(o.get("calibration_method", "minmax")),
        )
        # The core validates options, but a hook may be called directly (tests, tools).
        if cfg.precision not in PRECISIONS:
            raise ValueError(f"qnn: precision {cfg.precision!r} is not supported; valid: {', '.join(PRECISIONS)}")
        if cfg.htp_arch not in HTP_ARCHS:
            raise ValueError(f"qnn: htp_arch {cfg.htp_arch} is not valid; valid: {HTP_ARCHS}")
        if cfg.htp_performance_mode not in PERFORMANCE_MODES:
            raise ValueError(f"qnn: htp_performance_mode {cfg.htp_performance_mode!r} is not valid; "
                             f"valid: {', '.join(PERFORMANCE_MODES)}")
        if cfg.calibration_method not in CALIBRATION_METHODS:
            raise ValueError(f"qnn: calibration_method {cfg.calibration_method!r} is not valid; "
                             f"valid: {', '.join(CALIBRATION_METHODS)}")
        return cfg

    @property
    def quantized(self) -> bool:
        return self.precision in ("int8", "a16w8")

    def provider_options(self) -> dict[str, str]:
        """QNN EP provider options for this config (compile and load use the same ones)."""
        po = {
            "backend_type": "htp",
            "htp_performance_mode": self.htp_performance_mode,
            "soc_model": str(self.soc_model),
            # Keep the boundary quantize/dequantize inside the context binary, not on the CPU EP.
            "offload_graph_io_quantization": "0",
            "enable_htp_fp16_precision": "1" if self.precision == "fp16" else "0",
        }
        if self.htp_arch:
            po["htp_arch"] = str(self.htp_arch)
        return po

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
