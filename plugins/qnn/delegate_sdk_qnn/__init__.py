"""delegate-sdk plugin for Qualcomm Hexagon HTP via the ONNX Runtime QNN execution provider."""

__version__ = "0.1.0"
