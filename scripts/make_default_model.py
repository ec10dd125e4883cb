#!/usr/bin/env python3
"""Train, export and document the default model embedded in onnx-amc.

Why this script exists: the compressor needs a model *and* labelled calibration data
that are present on every machine without any download.  scikit-learn ships the UCI
handwritten digits (``sklearn.datasets.load_digits``) inside its wheel, so we train a
small residual CNN on it here and commit three artefacts under ``onnx_amc/assets``:

* ``digits_cnn.onnx``  - the exported model (opset 17, BN folded, dynamic batch "N");
* ``digits_calib.npz`` - the held-out calibration set (``input`` float32 [M,1,32,32],
  ``labels`` int64 [M]); it is never seen during training, so the compressor can split
  it further into a reconstruction part and an evaluation part without leakage;
* ``digits_cnn.json``  - provenance: command, seed, split sizes, the held-out top-1
  accuracy measured with onnxruntime on the exported file, parameter count, versions.

The model is deliberately small but structured like the networks AMC targets: a 3x3
stem, three residual basic blocks (the residual ``Add`` couples the channels of the
block input and output, which a pruner must respect), stride-2 transitions with 1x1
projection shortcuts, global average pooling and a linear classifier.

Regenerate with::

    python scripts/make_default_model.py

Everything is seeded and single-process with a fixed thread count, so re-running on
the same machine reproduces the same weights and accuracy.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import sklearn
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

LOG = logging.getLogger("make_default_model")

REPO_ROOT = Path(__file__).resolve().parent.parent
ASSETS_DIR = REPO_ROOT / "onnx_amc" / "assets"
MODEL_NAME = "digits_cnn.onnx"
CALIB_NAME = "digits_calib.npz"
META_NAME = "digits_cnn.json"

REGEN_COMMAND = "python scripts/make_default_model.py"
DEFAULT_SEED = 0
CALIB_FRACTION = 0.4
IMAGE_SIZE = 32
NUM_CLASSES = 10
OPSET = 17
NUM_THREADS = 2
MIN_ACCURACY = 0.97


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Split:
    """Train / held-out calibration arrays, already preprocessed to [N,1,32,32]."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_calib: np.ndarray
    y_calib: np.ndarray


def preprocess(images: np.ndarray) -> np.ndarray:
    """Turn raw 8x8 digits (0..16) into float32 [N,1,32,32] in [0,1].

    32x32 is used rather than the native 8x8 so that the network has enough spatial
    extent for a stem plus two stride-2 stages - otherwise there is nothing for the
    convolutions to be pruned *on*.  Train and calibration data share this function,
    so the compressor sees exactly the distribution the model was trained on.
    """
    x = torch.from_numpy(images.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    x = F.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    return x.numpy().astype(np.float32, copy=False)


def load_split(seed: int) -> Split:
    """Stratified, seeded train/calibration split of sklearn's digits.

    Stratification keeps every class represented in proportion in the calibration set,
    which matters because the compressor splits that set again and evaluates accuracy
    on the remainder.
    """
    digits = load_digits()
    x = preprocess(digits.images)
    y = digits.target.astype(np.int64)
    x_tr, x_ca, y_tr, y_ca = train_test_split(
        x, y, test_size=CALIB_FRACTION, stratify=y, random_state=seed, shuffle=True
    )
    LOG.info("split: %d train, %d held-out calibration", len(y_tr), len(y_ca))
    return Split(
        np.ascontiguousarray(x_tr),
        np.ascontiguousarray(y_tr),
        np.ascontiguousarray(x_ca),
        np.ascontiguousarray(y_ca),
    )


# -------------------------------------------------------------------------- model


def conv_bn(cin: int, cout: int, k: int, stride: int = 1) -> nn.Sequential:
    """Conv without bias followed by BN; the exporter folds the BN into the conv."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False),
        nn.BatchNorm2d(cout),
    )


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs plus a shortcut, joined by ``Add``.

    With ``stride == 1`` and equal widths the shortcut is the identity, so the block's
    input and output channels are coupled through the ``Add``.  Otherwise a 1x1
    projection conv is used, which gives the pruner a 1x1 conv to handle as well.
    """

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv_bn(cin, cout, 3, stride)
        self.conv2 = conv_bn(cout, cout, 3)
        self.shortcut: nn.Module = (
            nn.Identity() if stride == 1 and cin == cout else conv_bn(cin, cout, 1, stride)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.conv1(x))
        out = self.conv2(out)
        return F.relu(out + self.shortcut(x))


class DigitsCNN(nn.Module):
    """Stem 3x3 (16) -> block(16) @32 -> block(32, s2) @16 -> block(64, s2) @8 -> GAP -> FC."""

    def __init__(self, widths: tuple[int, int, int] = (16, 32, 64)) -> None:
        super().__init__()
        w1, w2, w3 = widths
        self.stem = conv_bn(1, w1, 3)
        self.stage1 = BasicBlock(w1, w1, 1)
        self.stage2 = BasicBlock(w1, w2, 2)
        self.stage3 = BasicBlock(w2, w3, 2)
        self.fc = nn.Linear(w3, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        x = self.stage3(self.stage2(self.stage1(x)))
        x = F.adaptive_avg_pool2d(x, 1)
        x = torch.flatten(x, 1)
        return self.fc(x)


def count_params(model: nn.Module) -> int:
    """Trainable parameters of the PyTorch model (BN affine included, buffers not)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ----------------------------------------------------------------------- training


def seed_everything(seed: int) -> None:
    """Fix every RNG and the thread count so reruns reproduce the same weights."""
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(NUM_THREADS)
    torch.use_deterministic_algorithms(True)


def random_shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Translate each image by up to ``max_shift`` pixels (zero fill).

    Handwritten digits are not centred identically; small shifts are the cheapest
    augmentation that buys robustness without distorting the glyphs.
    """
    n = x.shape[0]
    padded = F.pad(x, (max_shift,) * 4)
    offs = torch.randint(0, 2 * max_shift + 1, (n, 2), generator=gen)
    out = torch.empty_like(x)
    size = x.shape[-1]
    for i in range(n):
        dy, dx = int(offs[i, 0]), int(offs[i, 1])
        out[i] = padded[i, :, dy : dy + size, dx : dx + size]
    return out


def train(
    split: Split,
    seed: int,
    epochs: int,
    batch_size: int = 64,
    lr: float = 3e-3,
    max_shift: int = 3,
    make_model: Callable[[], nn.Module] = DigitsCNN,
) -> nn.Module:
    """Adam + one-cycle schedule on the training split only; ``make_model`` lets the digits
    zoo (scripts/make_digits_zoo.py) train its architectures with the same recipe."""
    seed_everything(seed)
    model = make_model()
    gen = torch.Generator().manual_seed(seed)
    x_tr = torch.from_numpy(split.x_train)
    y_tr = torch.from_numpy(split.y_train)
    steps_per_epoch = (len(y_tr) + batch_size - 1) // batch_size
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, epochs=epochs, steps_per_epoch=steps_per_epoch
    )
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(y_tr), generator=gen)
        total, correct, loss_sum = 0, 0, 0.0
        for b in range(steps_per_epoch):
            idx = perm[b * batch_size : (b + 1) * batch_size]
            xb = random_shift(x_tr[idx], max_shift, gen)
            yb = y_tr[idx]
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(yb)
            correct += int((logits.argmax(1) == yb).sum())
            total += len(yb)
        LOG.info(
            "epoch %2d/%d  loss %.4f  train-acc %.4f",
            epoch + 1,
            epochs,
            loss_sum / total,
            correct / total,
        )
    model.eval()
    return model


# ------------------------------------------------------------------------- export


def export_onnx(model: nn.Module) -> onnx.ModelProto:
    """Export with the TorchScript exporter in eval mode so BN is folded into Conv.

    The legacy exporter (``dynamo=False``) is used because it performs the Conv+BN
    fusion and emits plain Conv/Relu/Add/GlobalAveragePool/Gemm nodes, which is the
    graph shape the pruning rules are written against.
    """
    buf = io.BytesIO()
    dummy = torch.zeros(2, 1, IMAGE_SIZE, IMAGE_SIZE)
    with warnings.catch_warnings():
        # The legacy exporter is chosen on purpose (see above); its deprecation notice is noise.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (dummy,),
            buf,
            dynamo=False,
            opset_version=OPSET,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
            training=torch.onnx.TrainingMode.EVAL,
            do_constant_folding=True,
        )
    proto = onnx.load_model_from_string(buf.getvalue())
    proto.doc_string = f"Digits residual CNN; regenerate with `{REGEN_COMMAND}`."
    onnx.checker.check_model(proto, full_check=True)
    ops = {n.op_type for n in proto.graph.node}
    if "BatchNormalization" in ops:
        raise RuntimeError("BatchNormalization survived export; expected it folded into Conv")
    LOG.info("exported ONNX ops: %s", sorted(ops))
    return proto


def ort_logits(model_bytes: bytes, x: np.ndarray) -> np.ndarray:
    """Run the serialized model in onnxruntime (CPU, deterministic thread count)."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = NUM_THREADS
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
    return sess.run(["logits"], {"input": x})[0]


# ------------------------------------------------------------------------ writing


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temp file in the same directory + ``os.replace``.

    An interrupted run must never leave a truncated asset that would later be loaded
    as if it were valid.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def npz_bytes(x: np.ndarray, y: np.ndarray) -> bytes:
    """Serialize the calibration set as a compressed npz (keys ``input``, ``labels``)."""
    buf = io.BytesIO()
    np.savez_compressed(buf, input=x.astype(np.float32), labels=y.astype(np.int64))
    return buf.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--out-dir", type=Path, default=ASSETS_DIR)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = parse_args(argv)

    t0, c0 = time.perf_counter(), time.process_time()
    split = load_split(args.seed)
    model = train(split, args.seed, args.epochs)
    train_seconds = time.perf_counter() - t0
    train_cpu_seconds = time.process_time() - c0

    proto = export_onnx(model)
    model_bytes = proto.SerializeToString()

    # The ONNX file must reproduce the PyTorch model it came from.
    with torch.no_grad():
        ref = model(torch.from_numpy(split.x_calib)).numpy()
    got = ort_logits(model_bytes, split.x_calib)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)

    preds = got.argmax(axis=1)
    correct = int((preds == split.y_calib).sum())
    accuracy = correct / len(split.y_calib)
    if accuracy < MIN_ACCURACY:
        raise SystemExit(f"held-out accuracy {accuracy:.4f} < {MIN_ACCURACY}; not writing assets")

    calib_bytes = npz_bytes(split.x_calib, split.y_calib)
    params = count_params(model)
    onnx_params = int(sum(np.prod(t.dims) for t in proto.graph.initializer))
    meta = {
        "description": "Residual CNN trained on sklearn.datasets.load_digits, upsampled to 1x32x32",
        "command": REGEN_COMMAND,
        "seed": args.seed,
        "epochs": args.epochs,
        "dataset": "sklearn.datasets.load_digits",
        "preprocessing": (
            f"pixels/16 -> bilinear upsample 8x8->{IMAGE_SIZE}x{IMAGE_SIZE} "
            "(align_corners=False), float32"
        ),
        "split": {
            "method": "sklearn train_test_split, stratified",
            "calib_fraction": CALIB_FRACTION,
            "train": len(split.y_train),
            "calib": len(split.y_calib),
        },
        "input": {"name": "input", "shape": ["N", 1, IMAGE_SIZE, IMAGE_SIZE], "dtype": "float32"},
        "output": {"name": "logits", "shape": ["N", NUM_CLASSES], "dtype": "float32"},
        "opset": OPSET,
        "calib_top1_accuracy": accuracy,
        "calib_correct": correct,
        "accuracy_measured_with": f"onnxruntime {ort.__version__} on {MODEL_NAME} over {CALIB_NAME}",
        "params_torch": params,
        "params_onnx": onnx_params,
        "files": {
            MODEL_NAME: {"sha256": sha256(model_bytes), "bytes": len(model_bytes)},
            CALIB_NAME: {"sha256": sha256(calib_bytes), "bytes": len(calib_bytes)},
        },
        "versions": {
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": ort.__version__,
            "numpy": np.__version__,
            "scikit-learn": sklearn.__version__,
        },
    }
    meta_bytes = (json.dumps(meta, indent=2, sort_keys=False) + "\n").encode()

    out: Path = args.out_dir
    atomic_write_bytes(out / MODEL_NAME, model_bytes)
    atomic_write_bytes(out / CALIB_NAME, calib_bytes)
    atomic_write_bytes(out / META_NAME, meta_bytes)

    print(f"held-out top-1 accuracy (onnxruntime): {accuracy:.4f} ({correct}/{len(split.y_calib)})")
    print(f"params: torch {params}, onnx initializers {onnx_params}")
    # Wall time depends on machine load; CPU time (summed over threads) does not much.
    print(f"training time: {train_seconds:.1f} s wall, {train_cpu_seconds:.1f} s CPU")
    for name in (MODEL_NAME, CALIB_NAME, META_NAME):
        print(f"wrote {out / name} ({(out / name).stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
