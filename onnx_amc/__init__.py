"""onnx-amc: AutoML for Model Compression on ONNX graphs."""

__version__ = "0.1.0"
