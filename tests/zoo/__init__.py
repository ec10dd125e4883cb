"""Test zoo: real architectures (hand-written in torch) exported to cached ONNX files.

Graph-pruning tests need the patterns real models have (residuals, depthwise/grouped convs,
SE gates, dense concat, chunk/split, channel shuffle, upsample necks, Gemm/MatMul MLPs), and
need them at several opsets and with/without BatchNormalization nodes. Usage::

    from tests.zoo import NAMES, model_path, sample_inputs
    path = model_path("resnet18", opset=13, bn="kept")

Prebuild everything with ``python -m tests.zoo``.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import architectures, export
from .export import BN_MODES, OPSETS, cache_dir

__all__ = [
    "BN_MODES",
    "NAMES",
    "OPSETS",
    "cache_dir",
    "has_bn",
    "input_shapes",
    "model_path",
    "num_batchnorm",
    "output_names",
    "sample_inputs",
    "torch_macs",
    "torch_model",
]

NAMES: tuple[str, ...] = tuple(architectures.SPECS)


def model_path(name: str, opset: int = 17, bn: str = "folded") -> Path:
    """Path of the cached ONNX export of ``name``; exports it first if it is missing.

    bn="folded" is the default eval export (Conv->BN fused); bn="kept" keeps every BN as a
    BatchNormalization node. Inputs/outputs have a dynamic batch axis named "batch".
    """
    return export.build_if_missing(name, opset, bn)[0]


def input_shapes(name: str) -> dict[str, tuple[int, ...]]:
    """Concrete batch-1 shapes of the ONNX inputs, e.g. {"input": (1, 3, 64, 64)}."""
    return dict(architectures.SPECS[name].inputs)


def output_names(name: str) -> tuple[str, ...]:
    """ONNX output names: ("output",), or ("output0", "output1", "output2") for yolo."""
    return architectures.SPECS[name].outputs


def sample_inputs(name: str, batch: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic standard-normal float32 feeds for ORT (and torch via from_numpy)."""
    return export.example_input(name, batch, seed)


def torch_model(name: str) -> nn.Module:
    """A fresh eval-mode torch model with exactly the weights baked into the ONNX exports."""
    return architectures.build(name)


def torch_macs(name: str) -> int:
    """Batch-1 MACs (FlopCounterMode flops / 2; conv and matmul only), cached on disk."""
    return export.macs(name)


@cache
def num_batchnorm(name: str) -> int:
    """Number of BatchNorm modules in ``name`` (= BatchNormalization nodes of bn="kept")."""
    with torch.device("meta"):  # structure only: skips allocating and initialising weights
        model = architectures.SPECS[name].factory()
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def has_bn(name: str) -> bool:
    """Whether bn="kept" and bn="folded" differ at all for ``name`` (the MLPs have no BN)."""
    return num_batchnorm(name) > 0
