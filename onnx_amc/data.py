"""Calibration data: loading, validation and the reconstruction/evaluation split.

The compressor needs a few hundred real inputs for two jobs: reconstructing pruned
layers (``recon`` part) and scoring candidates (``eval`` part).  Everything here is
validated *before* any model runs so that a typo in a path or a wrong preprocessing
choice fails in a second with one clear line (:class:`~onnx_amc.errors.InputError`),
not after an hour of search.

Supported sources
-----------------
``.npz``
    One array per model input, keyed by the input name, batch axis first.  An optional
    ``labels`` array (1-D non-negative integer class indices, one per sample; floats
    holding whole numbers are accepted) enables accuracy metrics.  Any other
    key is an error (a misspelt input name would otherwise be silently ignored).
``.npy``
    A single array for a single-input model.  No labels.
directory of images
    Decoded with Pillow, resized so the shorter side is ``resize_shorter`` and centre
    cropped to the model's H, W (see :class:`ImageOptions`).  If the directory holds
    class subfolders, labels are the index of the subfolder name in the *sorted* list
    of subfolder names (the ImageFolder convention); the user must make that order
    match the model's class indices.  Otherwise there are no labels.

Dtype policy
------------
Arrays are cast to the model's input dtype only when the cast cannot change the
meaning of the data: numpy "safe" casts (e.g. ``float16 -> float32``,
``int32 -> int64``) silently, plus ``float64 -> float32`` with a logging warning
(``np.save`` of a Python float array gives float64, so refusing it would mostly annoy
people; the precision lost is far below what pruning changes).  Any other mismatch,
in particular integer vs float, is an :class:`InputError`.

Shape policy
------------
Axis 0 is the sample axis and is never checked against the model (the evaluator runs
sample by sample for models with a fixed batch of 1).  The remaining axes must have
the model's rank and match every static dimension; dynamic dimensions accept anything.

Security: ``np.load`` is always called with ``allow_pickle=False``; calibration files
are untrusted input.
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import onnx

from onnx_amc.errors import InputError

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "IMAGE_EXTENSIONS",
    "CalibrationSet",
    "ImageOptions",
    "InputSpec",
    "input_specs_from_model",
    "load_calibration",
    "split_calibration",
]

logger = logging.getLogger(__name__)

#: File suffixes (lower case) treated as images in a calibration folder.  Other files
#: (READMEs, ``.DS_Store``...) are ignored rather than counted as unreadable.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)

LABELS_KEY = "labels"


@dataclass(frozen=True)
class InputSpec:
    """What a model expects on one input.

    ``shape`` holds ``None`` for dynamic dimensions (``dim_param`` or unknown); it is
    ``None`` itself when the model does not even declare a rank.
    """

    name: str
    dtype: np.dtype
    shape: tuple[int | None, ...] | None


@dataclass(frozen=True)
class ImageOptions:
    """Preprocessing for image folders (torchvision ImageNet conventions by default).

    The defaults reproduce the usual ``Resize(256) -> CenterCrop(224) -> ToTensor ->
    Normalize(imagenet mean/std)`` pipeline scaled to the model's input size, because
    that is what most exported classifiers were trained with.  Models exported from
    other ecosystems (Caffe BGR, TF [-1, 1]) need explicit options.

    Attributes:
        size: ``(H, W)`` of the crop; ``None`` takes them from the model's static dims.
        resize_shorter: length the shorter image side is resized to before cropping;
            ``None`` means ``round(max(H, W) / crop_fraction)`` (256 for 224).
        crop_fraction: used only to derive ``resize_shorter``.
        scale: multiplier applied to the 0..255 pixel values before mean/std.
        mean, std: per channel, in the order of ``channel_order``; applied as
            ``(pixel * scale - mean) / std``.  Length 1 or the channel count.
        channel_order: ``"RGB"`` or ``"BGR"`` (ignored for single-channel models).
        layout: ``"NCHW"``, ``"NHWC"`` or ``None`` to infer it from the model shape
            (the axis with 1 or 3 channels).
    """

    size: tuple[int, int] | None = None
    resize_shorter: int | None = None
    crop_fraction: float = 0.875
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    channel_order: Literal["RGB", "BGR"] = "RGB"
    layout: Literal["NCHW", "NHWC"] | None = None


@dataclass(frozen=True)
class CalibrationSet:
    """Calibration samples, one array per model input with the sample axis first.

    ``labels`` are integer class indices (or ``None``); ``source`` says where the data
    came from, for logs and reports.  ``class_names`` is set for image folders with
    class subfolders so reports can show the mapping that was assumed.
    """

    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None
    source: str
    class_names: tuple[str, ...] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        counts = {name: int(arr.shape[0]) for name, arr in self.inputs.items()}
        if not counts:
            raise ValueError("CalibrationSet needs at least one input")
        if len(set(counts.values())) != 1:
            raise ValueError(f"inputs disagree on the number of samples: {counts}")
        if self.labels is not None and len(self.labels) != next(iter(counts.values())):
            raise ValueError("labels length differs from the number of samples")

    def __len__(self) -> int:
        return int(next(iter(self.inputs.values())).shape[0])

    def first_sample(self) -> dict[str, np.ndarray]:
        """Batch-1 feeds of the first sample: what latency is timed on, here or on a device,
        so that models with symbolic spatial dims are timed at the user's size."""
        return {name: arr[:1] for name, arr in self.inputs.items()}

    def subset(self, indices: Sequence[int] | np.ndarray) -> CalibrationSet:
        """Samples at ``indices`` (in that order), as a new set with the same source."""
        idx = np.asarray(indices, dtype=np.int64)
        return CalibrationSet(
            inputs={name: arr[idx] for name, arr in self.inputs.items()},
            labels=None if self.labels is None else self.labels[idx],
            source=self.source,
            class_names=self.class_names,
        )


# --------------------------------------------------------------------------- model specs


def input_specs_from_model(model: onnx.ModelProto) -> list[InputSpec]:
    """The real (non-initializer) inputs of ``model`` as :class:`InputSpec` objects.

    Old exporters list initializers among the graph inputs; those are weights, not
    data, and are skipped.
    """
    initializers = {init.name for init in model.graph.initializer}
    specs: list[InputSpec] = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        if value.type.WhichOneof("value") != "tensor_type":
            raise InputError(
                f"model input '{value.name}' is not a tensor; only tensor inputs are supported"
            )
        ttype = value.type.tensor_type
        try:
            dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(ttype.elem_type))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(
                f"model input '{value.name}' has unsupported element type {ttype.elem_type}"
            ) from exc
        shape: tuple[int | None, ...] | None = None
        if ttype.HasField("shape"):
            shape = tuple(
                int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else None
                for d in ttype.shape.dim
            )
        specs.append(InputSpec(name=value.name, dtype=dtype, shape=shape))
    if not specs:
        raise InputError("model has no data inputs")
    return specs


# --------------------------------------------------------------------------- loading


def load_calibration(
    path: str | Path,
    input_specs: Sequence[InputSpec],
    *,
    size: int | None = None,
    image_options: ImageOptions | None = None,
    seed: int = 0,
) -> CalibrationSet:
    """Load and validate calibration data for a model with ``input_specs``.

    Args:
        path: ``.npz`` file, ``.npy`` file or directory of images (see module docs).
        input_specs: from :func:`input_specs_from_model`.
        size: keep only the first ``size`` samples after a shuffle seeded by ``seed``
            (``--calib-size``); ``None`` keeps all samples in their stored order.  A
            ``size`` above the number of available samples keeps all, with a warning.
        image_options: preprocessing for image folders; ignored for arrays.
        seed: shuffle seed, so that ``--calib-size`` picks the same samples every run.

    Raises:
        InputError: one line naming the file/input and the problem.
    """
    p = Path(path)
    if size is not None and size <= 0:
        raise InputError(f"calibration size must be a positive integer, got {size}")
    if not input_specs:
        raise InputError("model has no data inputs")
    if not p.exists():
        raise InputError(f"calibration data '{p}' does not exist")

    if p.is_dir():
        calib = _load_image_folder(p, input_specs, image_options or ImageOptions(), size, seed)
        logger.info("loaded %d calibration images from %s", len(calib), p)
        return calib

    suffix = p.suffix.lower()
    if suffix == ".npz":
        inputs, labels = _read_npz(p, input_specs)
    elif suffix == ".npy":
        inputs, labels = _read_npy(p, input_specs)
    else:
        raise InputError(
            f"calibration data '{p}' has unknown extension '{p.suffix}'; "
            "expected .npz, .npy or a directory of images"
        )

    inputs = {spec.name: _conform(p, spec, inputs[spec.name]) for spec in input_specs}
    n = _common_length(p, inputs)
    if labels is not None:
        labels = _check_labels(p, labels, n)
    if n == 0:
        raise InputError(f"calibration data '{p}' contains no samples")

    calib = CalibrationSet(inputs=inputs, labels=labels, source=str(p))
    if size is not None:
        calib = calib.subset(_take_first(n, size, seed, p))
    logger.info("loaded %d calibration samples from %s", len(calib), p)
    return calib


def _take_first(n: int, size: int, seed: int, p: Path) -> np.ndarray:
    if size > n:
        logger.warning(
            "calibration size %d exceeds the %d samples in %s; using all of them", size, n, p
        )
        size = n
    order = np.random.default_rng(seed).permutation(n)
    return order[:size]


def _safe_np_load(p: Path) -> np.ndarray | np.lib.npyio.NpzFile:
    try:
        return np.load(p, allow_pickle=False)
    except ValueError as exc:
        # numpy raises ValueError for pickled object arrays when allow_pickle=False.
        raise InputError(
            f"calibration file '{p}' cannot be read without pickle (object arrays are "
            f"refused for safety): {exc}"
        ) from exc
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(f"calibration file '{p}' is not a valid numpy file: {exc}") from exc


def _read_npz(
    p: Path, specs: Sequence[InputSpec]
) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    data = _safe_np_load(p)
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise InputError(f"calibration file '{p}' has extension .npz but holds a single array")
    with data:
        keys = list(data.files)
        names = [s.name for s in specs]
        missing = [n for n in names if n not in keys]
        label_key = LABELS_KEY if LABELS_KEY not in names else None
        extra = [k for k in keys if k not in names and k != label_key]
        if missing:
            raise InputError(
                f"calibration file '{p}' lacks array(s) for model input(s) {missing}; it has {keys}"
            )
        if extra:
            raise InputError(
                f"calibration file '{p}' has unexpected array(s) {extra}; expected one per "
                f"model input {names} and optionally '{LABELS_KEY}'"
            )
        try:
            inputs = {n: data[n] for n in names}
            labels = data[label_key] if label_key is not None and label_key in keys else None
        except ValueError as exc:
            raise InputError(
                f"calibration file '{p}' holds object arrays, refused for safety: {exc}"
            ) from exc
        except (OSError, EOFError, zipfile.BadZipFile) as exc:
            raise InputError(f"calibration file '{p}' is corrupt: {exc}") from exc
    return inputs, labels


def _read_npy(
    p: Path, specs: Sequence[InputSpec]
) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    if len(specs) != 1:
        raise InputError(
            f"calibration file '{p}' is a single .npy array but the model has "
            f"{len(specs)} inputs {[s.name for s in specs]}; use an .npz keyed by input name"
        )
    arr = _safe_np_load(p)
    if not isinstance(arr, np.ndarray):
        raise InputError(f"calibration file '{p}' has extension .npy but is an archive")
    return {specs[0].name: arr}, None


def _fmt_shape(shape: Iterable[int | None]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _conform(p: Path, spec: InputSpec, arr: np.ndarray) -> np.ndarray:
    """Check ``arr`` against ``spec`` (shape after axis 0, dtype) and cast if allowed."""
    if arr.dtype.hasobject or arr.dtype.kind in "SUVMm":
        raise InputError(
            f"calibration array '{spec.name}' in '{p}' has non-numeric dtype {arr.dtype}"
        )
    if spec.shape is not None:
        if arr.ndim != len(spec.shape):
            raise InputError(
                f"calibration array '{spec.name}' in '{p}' has shape {list(arr.shape)} "
                f"(rank {arr.ndim}) but the model input is {_fmt_shape(spec.shape)} "
                f"(rank {len(spec.shape)}); axis 0 must be the sample axis"
            )
        bad = [
            i
            for i, (want, got) in enumerate(zip(spec.shape, arr.shape, strict=True))
            if i > 0 and want is not None and want != got
        ]
        if bad:
            raise InputError(
                f"calibration array '{spec.name}' in '{p}' has shape {list(arr.shape)} "
                f"but the model input is {_fmt_shape(spec.shape)} (mismatch on axis "
                f"{', '.join(map(str, bad))})"
            )
    return _cast(p, spec, arr)


def _cast(p: Path | str, spec: InputSpec, arr: np.ndarray) -> np.ndarray:
    want = np.dtype(spec.dtype)
    if arr.dtype == want:
        return arr
    same_family = arr.dtype.kind == want.kind or (arr.dtype.kind == "u" and want.kind == "i")
    if same_family and np.can_cast(arr.dtype, want, casting="safe"):
        return arr.astype(want)
    if arr.dtype == np.float64 and want == np.float32:
        logger.warning(
            "calibration array '%s' in %s is float64; casting to the model's float32", spec.name, p
        )
        return arr.astype(np.float32)
    raise InputError(
        f"calibration array '{spec.name}' in '{p}' has dtype {arr.dtype} but the model "
        f"input expects {want}; convert the data (only lossless casts and float64->float32 "
        "are done automatically)"
    )


def _common_length(p: Path, inputs: Mapping[str, np.ndarray]) -> int:
    lengths = {name: int(arr.shape[0]) if arr.ndim else -1 for name, arr in inputs.items()}
    if any(v < 0 for v in lengths.values()):
        scalars = [k for k, v in lengths.items() if v < 0]
        raise InputError(f"calibration array(s) {scalars} in '{p}' are scalars; need a sample axis")
    if len(set(lengths.values())) != 1:
        raise InputError(
            f"calibration arrays in '{p}' disagree on the number of samples (axis 0): {lengths}"
        )
    return next(iter(lengths.values()))


def _check_labels(p: Path | str, labels: np.ndarray, n: int) -> np.ndarray:
    if labels.ndim != 1:
        raise InputError(
            f"labels in '{p}' must be a 1-D array of class indices, got shape {list(labels.shape)}"
        )
    if labels.dtype.kind not in "iu":
        if (
            labels.dtype.kind == "f"
            and labels.size
            and np.all(np.isfinite(labels))
            and np.all(labels == np.round(labels))
        ):
            labels = labels.astype(np.int64)
        elif labels.size:
            raise InputError(
                f"labels in '{p}' must be integer class indices, got dtype {labels.dtype}"
            )
    if len(labels) != n:
        raise InputError(f"labels in '{p}' have {len(labels)} entries but there are {n} samples")
    if labels.size and labels.min() < 0:
        raise InputError(f"labels in '{p}' contain negative class indices")
    return labels.astype(np.int64)


# --------------------------------------------------------------------------- images


@dataclass(frozen=True)
class _ImageGeometry:
    height: int
    width: int
    channels: int
    layout: Literal["NCHW", "NHWC"]


def _image_geometry(p: Path, spec: InputSpec, opts: ImageOptions) -> _ImageGeometry:
    shape = spec.shape
    if shape is not None and len(shape) != 4:
        raise InputError(
            f"image folder '{p}' needs a 4-D image input but model input '{spec.name}' is "
            f"{_fmt_shape(shape)}"
        )
    layout = opts.layout
    if layout is None:
        if shape is None:
            raise InputError(
                f"model input '{spec.name}' has no shape; give the image layout explicitly"
            )
        if shape[1] in (1, 3):
            layout = "NCHW"
        elif shape[3] in (1, 3):
            layout = "NHWC"
        else:
            raise InputError(
                f"cannot infer NCHW/NHWC for model input '{spec.name}' "
                f"{_fmt_shape(shape)}; give the image layout explicitly"
            )
    if layout not in ("NCHW", "NHWC"):
        raise InputError(f"image layout must be NCHW or NHWC, got '{layout}'")
    c_axis, h_axis, w_axis = (1, 2, 3) if layout == "NCHW" else (3, 1, 2)
    channels = shape[c_axis] if shape is not None else None
    channels = 3 if channels is None else channels
    if channels not in (1, 3):
        raise InputError(
            f"model input '{spec.name}' has {channels} channels; image folders support 1 or 3"
        )
    if opts.size is not None:
        height, width = opts.size
        model_hw = (shape[h_axis], shape[w_axis]) if shape is not None else (None, None)
        for want, got, axis in ((model_hw[0], height, "height"), (model_hw[1], width, "width")):
            if want is not None and want != got:
                raise InputError(
                    f"image {axis} {got} conflicts with model input '{spec.name}' "
                    f"{_fmt_shape(shape or ())}"
                )
    else:
        if shape is None or shape[h_axis] is None or shape[w_axis] is None:
            raise InputError(
                f"model input '{spec.name}' has dynamic height/width; give the image size "
                "explicitly"
            )
        height, width = int(shape[h_axis]), int(shape[w_axis])  # type: ignore[arg-type]
    if height <= 0 or width <= 0:
        raise InputError(f"image size must be positive, got {height}x{width}")
    for label, vals in (("mean", opts.mean), ("std", opts.std)):
        if len(vals) not in (1, channels):
            raise InputError(
                f"image {label} has {len(vals)} values but model input '{spec.name}' has "
                f"{channels} channel(s)"
            )
    if any(s == 0 for s in opts.std):
        raise InputError("image std values must be non-zero")
    return _ImageGeometry(height, width, channels, layout)


def _list_images(folder: Path) -> list[Path]:
    return sorted(
        f
        for f in folder.iterdir()
        if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_EXTENSIONS
    )


def _load_image_folder(
    p: Path,
    specs: Sequence[InputSpec],
    opts: ImageOptions,
    size: int | None,
    seed: int,
) -> CalibrationSet:
    if len(specs) != 1:
        raise InputError(
            f"image folder '{p}' can only feed a single-input model; this model has "
            f"{[s.name for s in specs]}; use an .npz instead"
        )
    spec = specs[0]
    if np.dtype(spec.dtype).kind != "f":
        raise InputError(
            f"image folder '{p}' produces float pixels but model input '{spec.name}' is "
            f"{np.dtype(spec.dtype)}; use an .npz instead"
        )
    geom = _image_geometry(p, spec, opts)

    try:
        import PIL  # noqa: F401  (imported lazily: arrays need no Pillow)
    except ImportError as exc:  # pragma: no cover - Pillow is a declared dependency
        raise InputError("reading image folders needs Pillow (pip install pillow)") from exc

    subdirs = sorted(d for d in p.iterdir() if d.is_dir() and not d.name.startswith("."))
    class_dirs = [d for d in subdirs if _list_images(d)]
    files: list[Path]
    labels_list: list[int] | None
    class_names: tuple[str, ...] | None
    if class_dirs:
        class_names = tuple(d.name for d in class_dirs)
        files, labels_list = [], []
        for idx, d in enumerate(class_dirs):
            imgs = _list_images(d)
            files.extend(imgs)
            labels_list.extend([idx] * len(imgs))
        loose = _list_images(p)
        if loose:
            logger.warning(
                "%d image(s) directly in %s are ignored because it has class subfolders",
                len(loose),
                p,
            )
        logger.info("image folder %s: %d classes %s", p, len(class_names), class_names[:10])
    else:
        class_names, labels_list = None, None
        files = _list_images(p)
    if not files:
        raise InputError(
            f"image folder '{p}' contains no images (extensions: {sorted(IMAGE_EXTENSIONS)})"
        )

    order = np.arange(len(files))
    if size is not None:
        if size > len(files):
            logger.warning(
                "calibration size %d exceeds the %d images in %s; using all of them",
                size,
                len(files),
                p,
            )
        order = np.random.default_rng(seed).permutation(len(files))
    wanted = len(files) if size is None else min(size, len(files))

    # Decode in shuffled order and stop once enough images decoded, so that
    # --calib-size 500 on ImageNet-val does not decode 50k files.
    arrays: list[np.ndarray] = []
    kept: list[int] = []
    unreadable: list[Path] = []
    for i in order:
        if len(arrays) == wanted:
            break
        img = _read_image(files[i], geom, opts)
        if img is None:
            unreadable.append(files[i])
            continue
        arrays.append(img)
        kept.append(int(i))
    if unreadable:
        logger.warning(
            "skipped %d unreadable image(s) in %s (first: %s)", len(unreadable), p, unreadable[0]
        )
    if not arrays:
        raise InputError(f"image folder '{p}': none of the {len(files)} image files could be read")

    batch = np.stack(arrays).astype(spec.dtype, copy=False)
    labels = None if labels_list is None else np.asarray(labels_list, dtype=np.int64)[kept]
    return CalibrationSet(
        inputs={spec.name: batch}, labels=labels, source=str(p), class_names=class_names
    )


def _read_image(f: Path, geom: _ImageGeometry, opts: ImageOptions) -> np.ndarray | None:
    """Decode, resize, crop and normalise one image; ``None`` if Pillow cannot read it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(f) as im:
            im.load()
            im = im.convert("L" if geom.channels == 1 else "RGB")
            im = _resize_and_crop(im, geom.height, geom.width, opts)
            pixels = np.asarray(im, dtype=np.float32)
    except (
        UnidentifiedImageError,
        Image.DecompressionBombError,
        OSError,
        ValueError,
        SyntaxError,
    ) as exc:
        logger.debug("cannot read image %s: %s", f, exc)
        return None
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if geom.channels == 3 and opts.channel_order == "BGR":
        pixels = pixels[:, :, ::-1]
    mean = np.asarray(opts.mean, dtype=np.float32)
    std = np.asarray(opts.std, dtype=np.float32)
    pixels = (pixels * np.float32(opts.scale) - mean) / std
    if geom.layout == "NCHW":
        pixels = pixels.transpose(2, 0, 1)
    return np.ascontiguousarray(pixels)


def _resize_and_crop(im: Image.Image, height: int, width: int, opts: ImageOptions) -> Image.Image:
    from PIL import Image

    shorter = opts.resize_shorter
    if shorter is None:
        shorter = int(round(max(height, width) / opts.crop_fraction))
    shorter = max(shorter, height, width)  # never crop more than the image has
    w, h = im.size
    scale = shorter / min(w, h)
    new_w, new_h = max(width, int(round(w * scale))), max(height, int(round(h * scale)))
    if (new_w, new_h) != (w, h):
        im = im.resize((new_w, new_h), Image.Resampling.BILINEAR)
    left = (new_w - width) // 2
    top = (new_h - height) // 2
    return im.crop((left, top, left + width, top + height))


# --------------------------------------------------------------------------- split


def split_calibration(
    calib: CalibrationSet, recon_fraction: float = 0.5, seed: int = 0
) -> tuple[CalibrationSet, CalibrationSet]:
    """Split into disjoint (reconstruction, evaluation) sets, deterministically.

    Pruned layers are reconstructed on one part and candidates scored on the other, so
    the reward is not measured on the data the weights were fitted to.  With labels the
    split is stratified: samples are shuffled within each class and assigned by
    systematic sampling over the class-ordered list, so every class lands in each part
    in proportion (to within one sample).  Both parts keep the original sample order.

    Raises:
        ValueError: ``recon_fraction`` outside (0, 1) or fewer than 2 samples.
    """
    if not 0.0 < recon_fraction < 1.0:
        raise ValueError(f"recon_fraction must be in (0, 1), got {recon_fraction}")
    n = len(calib)
    if n < 2:
        raise ValueError(f"need at least 2 calibration samples to split, got {n}")
    k = min(max(int(round(n * recon_fraction)), 1), n - 1)
    rng = np.random.default_rng(seed)

    if calib.labels is None:
        recon_idx = rng.permutation(n)[:k]
    else:
        labels = np.asarray(calib.labels)
        ordered = np.concatenate(
            [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
        )
        pos = np.arange(n)
        take = (pos + 1) * k // n > pos * k // n  # exactly k positions, evenly spread
        recon_idx = ordered[take]
    mask = np.zeros(n, dtype=bool)
    mask[recon_idx] = True
    return calib.subset(np.flatnonzero(mask)), calib.subset(np.flatnonzero(~mask))
