"""edgeq: quantize TensorFlow models to TFLite int8, describe edge targets, deploy and measure on device.

The public API mirrors the CLI; heavy frameworks are imported only by the functions that need them.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
