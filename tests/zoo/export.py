"""Export zoo models to ONNX with the TorchScript exporter and cache them on disk.

Exports are slow-ish (seconds) and identical across test runs, so they are cached. The cache
key hashes this file and architectures.py together with the torch version, so changing a model
definition or the exporter silently rebuilds instead of testing a stale file. Files are written
to a temp name and os.replace()d in, so parallel pytest workers never see half-written files
(two workers may both build the same file; both write identical bytes, the last one wins).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
import time
import warnings
from collections.abc import Iterator
from functools import cache, lru_cache
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from . import architectures

OPSETS: tuple[int, ...] = (13, 17)
BN_MODES: tuple[str, ...] = ("folded", "kept")

_HERE = Path(__file__).resolve().parent
_REPO = _HERE.parent.parent


def cache_dir() -> Path:
    """Root of the zoo cache: $ONNX_AMC_ZOO_CACHE, else <repo>/.cache/zoo (gitignored)."""
    env = os.environ.get("ONNX_AMC_ZOO_CACHE")
    return Path(env).expanduser().resolve() if env else _REPO / ".cache" / "zoo"


@cache
def source_hash() -> str:
    """Hash of everything that determines the exported bytes (model code, export code, torch)."""
    h = hashlib.sha256()
    for f in ("architectures.py", "export.py"):
        h.update(f.encode())
        h.update((_HERE / f).read_bytes())
    h.update(torch.__version__.encode())
    return h.hexdigest()[:16]


def key_dir() -> Path:
    return cache_dir() / f"torch{torch.__version__.split('+')[0]}-{source_hash()}"


def stale_cache_dirs() -> list[Path]:
    """Cache dirs left by other source/torch versions (only names this module creates)."""
    root, current = cache_dir(), key_dir()
    if not root.is_dir():
        return []
    return [
        d
        for d in root.iterdir()
        if d.is_dir() and d != current and re.fullmatch(r"torch[^-]+-[0-9a-f]{16}", d.name)
    ]


def onnx_file(name: str, opset: int, bn: str) -> Path:
    """Cache location of one export (not built)."""
    return key_dir() / f"{name}_opset{opset}_bn-{bn}.onnx"


def _check_name(name: str) -> None:
    if name not in architectures.SPECS:
        raise KeyError(f"unknown zoo model {name!r}; known: {sorted(architectures.SPECS)}")


def _check_args(name: str, opset: int, bn: str) -> None:
    _check_name(name)
    if bn not in BN_MODES:
        raise ValueError(f"bn must be one of {BN_MODES}, got {bn!r}")
    if not isinstance(opset, int) or opset < 13:
        raise ValueError(f"opset must be an int >= 13, got {opset!r}")


@contextlib.contextmanager
def _atomic_target(path: Path) -> Iterator[Path]:
    """Yield a temp path next to ``path``; os.replace it into place only on success."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run torch with one intra-op thread, restoring the previous setting afterwards.

    On small (2-vCPU) machines torch's OpenMP conv path spends ~20 ms per op synchronising
    threads at these tiny resolutions; one thread makes building and exporting ~10x faster.
    """
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


def example_input(name: str, batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """Standard-normal float32 inputs with the leading (batch) dim set to ``batch``."""
    rng = np.random.default_rng(seed)
    return {
        k: rng.standard_normal((batch, *shape[1:]), dtype=np.float32)
        for k, shape in architectures.SPECS[name].inputs.items()
    }


def count_bn(model: onnx.ModelProto) -> int:
    return sum(n.op_type == "BatchNormalization" for n in model.graph.node)


@lru_cache(maxsize=1)
def _build_for_export(name: str) -> nn.Module:
    """Build once for the 4 (opset, bn) variants; export leaves the module unchanged."""
    with single_thread():
        return architectures.build(name)


def export_onnx(name: str, opset: int, bn: str, path: Path) -> None:
    """Export ``name`` to ``path`` (atomically).

    bn="folded": the default eval export; the TorchScript exporter's eval peephole fuses every
    BN that directly follows a Conv into the Conv weights/bias.
    bn="kept": training=TrainingMode.PRESERVE on an eval() model still exports inference-mode
    BatchNormalization but skips the eval peephole, so no BN is fused. Constant folding stays on
    in both modes, so the node lists differ only by the BN nodes (and folded Convs gain a bias
    input; kept-mode initializers keep their torch names, folded ones become "onnx::Conv_N").
    """
    _check_args(name, opset, bn)
    spec = architectures.SPECS[name]
    model = _build_for_export(name)
    args = tuple(torch.from_numpy(v) for v in example_input(name, 1).values())
    in_names = list(spec.inputs)
    out_names = list(spec.outputs)
    dynamic_axes = {n: {0: "batch"} for n in in_names + out_names}
    training = torch.onnx.TrainingMode.PRESERVE if bn == "kept" else torch.onnx.TrainingMode.EVAL
    with _atomic_target(path) as tmp, warnings.catch_warnings(), single_thread():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            args,
            str(tmp),
            dynamo=False,
            opset_version=opset,
            input_names=in_names,
            output_names=out_names,
            dynamic_axes=dynamic_axes,
            training=training,
            do_constant_folding=True,
        )
        n_bn_onnx = count_bn(onnx.load(str(tmp), load_external_data=False))
        n_bn_torch = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
        if bn == "kept" and n_bn_onnx != n_bn_torch:
            raise RuntimeError(
                f"{name}: kept-BN export has {n_bn_onnx} BatchNormalization nodes, "
                f"torch model has {n_bn_torch} BN modules"
            )
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; cached files are plain shared artefacts


def build_if_missing(name: str, opset: int = 17, bn: str = "folded") -> tuple[Path, float]:
    """Return (path, seconds spent building); 0.0 seconds means it came from the cache."""
    _check_args(name, opset, bn)
    path = onnx_file(name, opset, bn)
    if path.is_file():
        return path, 0.0
    t0 = time.perf_counter()
    export_onnx(name, opset, bn, path)
    return path, time.perf_counter() - t0


def count_macs(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> int:
    """MACs of one forward pass as torch's FlopCounterMode sees them (conv/mm/bmm only)."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad(), single_thread():
        model(*inputs)
    return int(counter.get_total_flops()) // 2


def macs(name: str) -> int:
    """Batch-1 MACs of ``name``, cached in a JSON sidecar next to the exports."""
    _check_name(name)
    path = key_dir() / f"{name}.macs.json"
    if path.is_file():
        return int(json.loads(path.read_text())["macs"])
    with single_thread():
        model = architectures.build(name)
    args = tuple(torch.from_numpy(v) for v in example_input(name, 1).values())
    value = count_macs(model, args)
    with _atomic_target(path) as tmp:
        tmp.write_text(json.dumps({"name": name, "macs": value, "batch": 1}))
    return value


def build_all_variants(name: str) -> list[tuple[str, int, str, int, int, float]]:
    """Build every (opset, bn) variant of one model plus its MACs sidecar, in one process.

    Rows are (name, opset, bn, file bytes, #nodes, build seconds or 0.0 if cached). Module-level
    so a spawn-based process pool can pickle it.
    """
    rows = []
    for opset in OPSETS:
        for bn in BN_MODES:
            path, seconds = build_if_missing(name, opset, bn)
            nodes = len(onnx.load(str(path), load_external_data=False).graph.node)
            rows.append((name, opset, bn, path.stat().st_size, nodes, seconds))
    macs(name)
    return rows
