"""onnx-amc: AutoML for Model Compression on ONNX graphs.

The Python API mirrors the CLI (which is a thin layer over it)::

    import onnx_amc

    report = onnx_amc.inspect("model.onnx")                       # channel groups
    pruned = onnx_amc.prune("model.onnx", keep=0.5)               # one ratio everywhere
    result = onnx_amc.compress("model.onnx", calib="calib.npz", flops=0.5)   # AMC search
    result.save("out/")                                           # model, policy, log, report
    metrics = onnx_amc.evaluate(result.model, calib="calib.npz", reference="model.onnx")

Every function takes a path, bytes or an ``onnx.ModelProto``.  Heavy dependencies (ONNX
Runtime sessions, torch, Stable-Baselines3) are imported only when a function needs them.
"""

__version__ = "0.1.0"

from .api import (  # noqa: E402 (after __version__, which submodules read)
    EvaluateResult,
    InspectReport,
    PruneResult,
    evaluate,
    inspect,
    load_policy,
    prune,
)
from .compress import CompressionResult, compress  # noqa: E402
from .errors import InputError  # noqa: E402

__all__ = [
    "__version__",
    "compress",
    "CompressionResult",
    "evaluate",
    "EvaluateResult",
    "inspect",
    "InspectReport",
    "prune",
    "PruneResult",
    "load_policy",
    "InputError",
]
