#!/usr/bin/env python3
"""Train and export the "digits zoo": ResNet / MobileNetV2 / VGG networks on sklearn digits.

Why this script exists: the default model (``scripts/make_default_model.py``) is a single
small ResNet.  The pruning and reconstruction benchmarks need *trained* networks of the
topologies AMC is usually evaluated on, with real accuracy to lose, and labelled
held-out data - all without any download.  So this script trains three more networks on
exactly the same stratified seeded split as the default model, which means the committed
``onnx_amc/assets/digits_calib.npz`` is held-out calibration data for every zoo model
too (the script verifies the split is byte-identical before training anything).

Models (all 1x32x32 input, 10 classes):

* ``digits_resnet``      - ResNet-18-like topology scaled down: 3x3 stem + maxpool, four
  stages of one basic block (16/32/64/128), identity and 1x1-projection shortcuts joined
  by ``Add`` (channel coupling), GAP, Linear;
* ``digits_mobilenetv2`` - MobileNetV2 inverted residuals: 1x1 expand, 3x3 depthwise,
  1x1 linear projection, ReLU6 (exported as ``Clip``), residual ``Add`` whenever the
  shapes match, 1x1 head conv, GAP, Linear;
* ``digits_vgg``         - VGG stages of conv3x3-BN-ReLU x2 + maxpool (32/64/128), then
  ``Flatten`` -> Linear -> ReLU -> Linear, i.e. the last conv's channels feed a ``Gemm``
  through a flatten, which a pruner must translate into input-column removal.

Each model is written twice under ``tests/data/digits``:

* ``<name>.onnx``    - opset 17, eval mode, BN folded into the convs (what gets pruned);
* ``<name>_bn.onnx`` - same weights with real ``BatchNormalization`` nodes kept
  (``TrainingMode.PRESERVE`` on an eval() model), because BN re-estimation after pruning
  needs BN nodes to re-estimate.

``models.json`` records, per model, the held-out top-1 accuracy measured with
onnxruntime on the exported file, parameter count, MACs, sha256/size of both files and
the training time.

Regenerate with::

    python scripts/make_digits_zoo.py                     # all three models
    python scripts/make_digits_zoo.py --models digits_vgg  # one model, JSON merged

Data loading, the split, seeding, the shift augmentation, onnxruntime evaluation and
atomic writes are imported from ``make_default_model`` (unchanged) so that both scripts
cannot drift apart.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import logging
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import onnx
import onnxruntime as ort
import sklearn
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

LOG = logging.getLogger("make_digits_zoo")

SCRIPTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = SCRIPTS_DIR.parent
OUT_DIR = REPO_ROOT / "tests" / "data" / "digits"
META_NAME = "models.json"
CALIB_PATH = REPO_ROOT / "onnx_amc" / "assets" / "digits_calib.npz"
REGEN_COMMAND = "python scripts/make_digits_zoo.py"
MAX_FILE_BYTES = 1_500_000


def _load_default_model_module() -> ModuleType:
    """Import ``scripts/make_default_model.py`` by path.

    ``scripts`` is not a package, so a plain import would depend on the CWD; loading by
    path works from anywhere (tests use the same trick).
    """
    path = SCRIPTS_DIR / "make_default_model.py"
    spec = importlib.util.spec_from_file_location("make_default_model", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("make_default_model", mod)  # dataclasses need the module registered
    spec.loader.exec_module(mod)
    return mod


dm = _load_default_model_module()
IMAGE_SIZE: int = dm.IMAGE_SIZE
NUM_CLASSES: int = dm.NUM_CLASSES
OPSET: int = dm.OPSET
MIN_ACCURACY: float = dm.MIN_ACCURACY


# ------------------------------------------------------------------------- models


def conv_bn_relu(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """Conv (no bias, BN follows) + BN + ReLU: the unit every zoo model is built from."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class DigitsResNet(nn.Module):
    """ResNet-18 topology at 1/4 width with one basic block per stage.

    The stem + maxpool brings 32x32 down to 16x16 early, exactly like ResNet-18's
    stem does for ImageNet; that keeps training within budget on 2 shared cores while
    still giving four stages (16@16, 32@8, 64@4, 128@2) with three projection
    shortcuts and one identity shortcut for the pruner to handle.
    """

    def __init__(self, widths: tuple[int, int, int, int] = (16, 32, 64, 128)) -> None:
        super().__init__()
        self.stem = dm.conv_bn(1, widths[0], 3)
        self.pool = nn.MaxPool2d(2)
        blocks: list[nn.Module] = []
        cin = widths[0]
        for i, w in enumerate(widths):
            blocks.append(dm.BasicBlock(cin, w, 1 if i == 0 else 2))
            cin = w
        self.stages = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.stem(x)))
        x = self.stages(x)
        x = F.adaptive_avg_pool2d(x, 1)
        return self.fc(torch.flatten(x, 1))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand -> 3x3 depthwise -> 1x1 linear projection.

    The projection has no activation (the "linear bottleneck"), and the residual ``Add``
    is only present when stride is 1 and widths match - the two coupling cases a pruner
    must distinguish.  With ``expand == 1`` the expansion conv is omitted, as in the
    first block of the original network.
    """

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(conv_bn_relu6(cin, hidden, 1))
        layers.append(conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden))
        layers += [nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.body = nn.Sequential(*layers)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return x + out if self.use_residual else out


def conv_bn_relu6(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """Conv + BN + ReLU6; ReLU6 exports as ``Clip(0, 6)``, as in real MobileNetV2 files."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(inplace=True),
    )


class DigitsMobileNetV2(nn.Module):
    """MobileNetV2 with scaled-down widths: stem s2 -> 7 inverted residuals -> 1x1 head.

    Settings are (expand, out channels, repeats, first stride) like the paper's table;
    four of the seven blocks carry a residual ``Add``.
    """

    SETTINGS: tuple[tuple[int, int, int, int], ...] = (
        (1, 8, 1, 1),
        (4, 16, 2, 2),
        (4, 24, 2, 2),
        (4, 32, 2, 1),
    )

    def __init__(self, stem: int = 16, head: int = 128) -> None:
        super().__init__()
        layers: list[nn.Module] = [conv_bn_relu6(1, stem, 3, 2)]
        cin = stem
        for expand, cout, repeats, stride in self.SETTINGS:
            for r in range(repeats):
                layers.append(InvertedResidual(cin, cout, stride if r == 0 else 1, expand))
                cin = cout
        layers.append(conv_bn_relu6(cin, head, 1))
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(head, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(self.features(x), 1)
        return self.fc(torch.flatten(x, 1))


class DigitsVGG(nn.Module):
    """VGG: stages of two conv3x3-BN-ReLU + maxpool, then a flatten into an MLP head.

    The first conv has stride 2: the input is an 8x8 digit upsampled to 32x32, so no
    information is lost, and running the 32-channel convs at 16x16 instead of 32x32
    cuts the training cost 4x.  The flatten of the 128x2x2 map into the first Linear is
    the point of this model: pruning the last conv's channels must remove groups of
    Gemm input columns.
    """

    def __init__(self, widths: tuple[int, int, int] = (32, 64, 128), hidden: int = 64) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 1
        for i, w in enumerate(widths):
            layers += [conv_bn_relu(cin, w, 3, 2 if i == 0 else 1), conv_bn_relu(w, w, 3)]
            layers.append(nn.MaxPool2d(2))
            cin = w
        self.features = nn.Sequential(*layers)
        spatial = IMAGE_SIZE // 2 // 2 ** len(widths)
        self.classifier = nn.Sequential(
            nn.Linear(cin * spatial * spatial, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, NUM_CLASSES),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


MODELS: dict[str, tuple[Callable[[], nn.Module], str]] = {
    "digits_resnet": (
        DigitsResNet,
        "ResNet-18-like: 3x3 stem + maxpool, 4 stages x 1 basic block (16/32/64/128), GAP, Linear",
    ),
    "digits_mobilenetv2": (
        DigitsMobileNetV2,
        "MobileNetV2-like: stem s2, 7 inverted residuals (ReLU6, depthwise 3x3), 1x1 head 128, "
        "GAP, Linear",
    ),
    "digits_vgg": (
        DigitsVGG,
        "VGG-like: 3 stages of 2x conv3x3-BN-ReLU + maxpool (32/64/128), Flatten -> Linear(64) "
        "-> ReLU -> Linear",
    ),
}


# ----------------------------------------------------------------------- training


# ------------------------------------------------------------------------- export


def export(model: nn.Module, name: str, keep_bn: bool) -> onnx.ModelProto:
    """Export with the TorchScript exporter; ``keep_bn`` selects the BN-preserving variant.

    Folded (``EVAL`` + constant folding) is the graph the pruner works on.  Kept
    (``PRESERVE`` on an eval() model, no constant folding) emits inference-mode
    ``BatchNormalization`` nodes with the running statistics, which BN re-estimation
    needs.  Both are checked for the expected presence/absence of BN.
    """
    buf = io.BytesIO()
    dummy = torch.zeros(2, 1, IMAGE_SIZE, IMAGE_SIZE)
    training = torch.onnx.TrainingMode.PRESERVE if keep_bn else torch.onnx.TrainingMode.EVAL
    with warnings.catch_warnings():
        # The legacy exporter is chosen on purpose (see make_default_model.export_onnx).
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
            training=training,
            do_constant_folding=not keep_bn,
        )
    if model.training:
        raise RuntimeError("export switched the model to training mode")
    proto = onnx.load_model_from_string(buf.getvalue())
    variant = "BatchNormalization kept" if keep_bn else "BN folded"
    proto.doc_string = f"{name} ({variant}); regenerate with `{REGEN_COMMAND}`."
    onnx.checker.check_model(proto, full_check=True)
    n_bn = sum(n.op_type == "BatchNormalization" for n in proto.graph.node)
    n_bn_torch = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    if keep_bn and n_bn != n_bn_torch:
        raise RuntimeError(f"{name}: {n_bn} BatchNormalization nodes, torch has {n_bn_torch}")
    if not keep_bn and n_bn:
        raise RuntimeError(f"{name}: {n_bn} BatchNormalization nodes survived folding")
    LOG.info("%s (%s) ops: %s", name, variant, sorted({n.op_type for n in proto.graph.node}))
    return proto


def count_macs(model: nn.Module) -> int:
    """MACs of one 1x1x32x32 forward pass as FlopCounterMode sees them (conv/mm; flops/2)."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 1, IMAGE_SIZE, IMAGE_SIZE))
    return int(counter.get_total_flops()) // 2


# --------------------------------------------------------------------------- main


def check_split_matches_assets(split: dm.Split) -> None:
    """Refuse to train unless our held-out split is exactly the committed calibration set.

    The whole point of the zoo is that ``digits_calib.npz`` is held out for every model;
    if sklearn ever changed ``load_digits`` or the split, training would silently leak.
    """
    with np.load(CALIB_PATH) as f:
        x, y = f["input"], f["labels"]
    if not (np.array_equal(x, split.x_calib) and np.array_equal(y, split.y_calib)):
        raise SystemExit(f"split for this seed does not reproduce {CALIB_PATH}; aborting")


def build_one(name: str, split: dm.Split, seed: int, epochs: int, out: Path) -> dict[str, object]:
    """Train, export (both variants), verify and write one model; return its JSON entry."""
    make_model, description = MODELS[name]
    LOG.info("=== %s", name)
    t0, c0 = time.perf_counter(), time.process_time()
    model = dm.train(split, seed, epochs, make_model=make_model)
    train_seconds = time.perf_counter() - t0
    train_cpu_seconds = time.process_time() - c0

    folded = export(model, name, keep_bn=False).SerializeToString()
    kept = export(model, name, keep_bn=True).SerializeToString()

    with torch.no_grad():
        ref = model(torch.from_numpy(split.x_calib)).numpy()
    got = dm.ort_logits(folded, split.x_calib)
    got_bn = dm.ort_logits(kept, split.x_calib)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got_bn, ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got_bn, got, rtol=1e-4, atol=1e-4)

    correct = int((got.argmax(axis=1) == split.y_calib).sum())
    accuracy = correct / len(split.y_calib)
    accuracy_bn = float((got_bn.argmax(axis=1) == split.y_calib).mean())
    if accuracy < MIN_ACCURACY:
        raise SystemExit(f"{name}: held-out accuracy {accuracy:.4f} < {MIN_ACCURACY}")
    files = {f"{name}.onnx": folded, f"{name}_bn.onnx": kept}
    for fname, data in files.items():
        if len(data) > MAX_FILE_BYTES:
            raise SystemExit(f"{fname}: {len(data)} bytes > {MAX_FILE_BYTES}")

    entry: dict[str, object] = {
        "description": description,
        "command": f"{REGEN_COMMAND} --models {name}",
        "seed": seed,
        "epochs": epochs,
        "calib_top1_accuracy": accuracy,
        "calib_correct": correct,
        "calib_top1_accuracy_bn": accuracy_bn,
        "params_torch": dm.count_params(model),
        "params_onnx": int(
            sum(np.prod(t.dims) for t in onnx.load_from_string(folded).graph.initializer)
        ),
        "macs": count_macs(model),
        "train_seconds_wall": round(train_seconds, 1),
        "train_seconds_cpu": round(train_cpu_seconds, 1),
        "files": {f: {"sha256": dm.sha256(d), "bytes": len(d)} for f, d in files.items()},
    }
    for fname, data in files.items():
        dm.atomic_write_bytes(out / fname, data)
    print(
        f"{name}: held-out top-1 {accuracy:.4f} ({correct}/{len(split.y_calib)}), "
        f"params {entry['params_torch']}, MACs {entry['macs']}, "
        f"train {train_seconds:.1f} s wall / {train_cpu_seconds:.1f} s CPU, "
        + ", ".join(f"{f} {len(d)} B" for f, d in files.items())
    )
    return entry


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS))
    p.add_argument("--seed", type=int, default=dm.DEFAULT_SEED)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--out-dir", type=Path, default=OUT_DIR)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = parse_args(argv)
    out: Path = args.out_dir
    split = dm.load_split(args.seed)
    check_split_matches_assets(split)

    meta_path = out / META_NAME
    # Merge so that regenerating one model keeps the other entries.
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {"models": {}}
    for name in args.models:
        meta["models"][name] = build_one(name, split, args.seed, args.epochs, out)
    meta["models"] = {k: meta["models"][k] for k in MODELS if k in meta["models"]}
    meta.update(
        {
            "command": REGEN_COMMAND,
            "dataset": "sklearn.datasets.load_digits, preprocessed as scripts/make_default_model.py",
            "calibration_data": "onnx_amc/assets/digits_calib.npz (held out from every model)",
            "calib_sha256": dm.sha256(CALIB_PATH.read_bytes()),
            "split": {"train": len(split.y_train), "calib": len(split.y_calib)},
            "input": {"name": "input", "shape": ["N", 1, IMAGE_SIZE, IMAGE_SIZE]},
            "output": {"name": "logits", "shape": ["N", NUM_CLASSES]},
            "opset": OPSET,
            "accuracy_measured_with": f"onnxruntime {ort.__version__} on <name>.onnx",
            "macs_measured_with": "torch.utils.flop_counter.FlopCounterMode flops / 2, batch 1",
            "versions": {
                "torch": torch.__version__,
                "onnx": onnx.__version__,
                "onnxruntime": ort.__version__,
                "numpy": np.__version__,
                "scikit-learn": sklearn.__version__,
            },
        }
    )
    ordered = {k: meta[k] for k in meta if k != "models"} | {"models": meta["models"]}
    dm.atomic_write_bytes(meta_path, (json.dumps(ordered, indent=2) + "\n").encode())
    print(f"wrote {meta_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
