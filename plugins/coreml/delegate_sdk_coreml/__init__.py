"""Apple Core ML delegate for delegate-sdk: coremltools converts partitions to ML Programs.

On macOS Core ML runs them; elsewhere :mod:`delegate_sdk_coreml.mil_interpreter`
executes the saved ML Program with numpy in its declared precision.
"""

__version__ = "0.1.0"
