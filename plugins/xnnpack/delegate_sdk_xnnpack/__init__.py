"""delegate-sdk plugin for XNNPACK on CPUs, through ExecuTorch's XNNPACK delegate (compiler and runtime)."""

__version__ = "0.1.0"
