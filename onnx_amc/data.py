"""Calibration data: loading, validation and the reconstruction/evaluation split.

The compressor needs a few hundred real inputs for two jobs: reconstructing pruned
layers (``recon`` part) and scoring candidates (``eval`` part).  Everything here is
validated *before* any model runs so that a typo in a path or a wrong preprocessing
choice fails in a second with one clear line (:class:`~onnx_amc.errors.InputError`),
not after an hour of search.

Supported sources
-----------------
``.npz``
    A zip (``np.savez``) of one array per model input, keyed by the input name, batch
    axis first.  An optional ``labels`` array (1-D non-negative integer class indices,
    one per sample; floats holding whole numbers are accepted) enables accuracy metrics;
    labels beyond the model's classes are refused.  Any other key is an error (a
    misspelt input name would otherwise be silently ignored).
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

Values must be finite: a NaN or Inf in the calibration inputs would silently turn every
candidate's score (and the reconstruction's least squares) into noise.

Security: ``np.load`` is always called with ``allow_pickle=False``; calibration files
are untrusted input.  Before loading, the leading bytes must be a zip (``.npz``) or
``.npy`` magic, and every ``.npy`` header must declare exactly as much data as the file
(or zip member) holds, so that a corrupt or hostile header cannot make numpy allocate
terabytes.
"""

from __future__ import annotations

import logging
import math
import zipfile
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Literal

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
    "check_label_range",
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

_NPY_MAGIC = np.lib.format.MAGIC_PREFIX  # b"\x93NUMPY"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a zip's first entry, or an empty zip
#: What reading a damaged zip member raises: ``zlib.error`` for a bad deflate stream,
#: ``BadZipFile`` for a CRC mismatch, ``EOFError`` for a short member, ``RuntimeError`` for
#: an encrypted one (``NotImplementedError``, a subclass, for an unknown compression).
_ZIP_READ_ERRORS = (OSError, EOFError, RuntimeError, zipfile.BadZipFile, zlib.error)


@dataclass(frozen=True)
class InputSpec:
    """What a model expects on one input.

    ``shape`` holds ``None`` for dynamic dimensions (``dim_param`` or unknown); it is
    ``None`` itself when the model does not even declare a rank.

    ``classifier`` is ``(output name, number of classes)`` of the model output that the
    metrics score labels on, when the declared output shapes settle it (the same on every
    spec of one model).  It is carried here so that :func:`load_calibration` can refuse
    labels beyond the model's classes on the whole set, before any work; ``None`` leaves
    that check to the evaluator, which sees the real outputs.
    """

    name: str
    dtype: np.dtype
    shape: tuple[int | None, ...] | None
    classifier: tuple[str, int] | None = field(default=None, compare=False)


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
    classifier = _declared_classifier(model, specs)
    return [InputSpec(s.name, s.dtype, s.shape, classifier) for s in specs]


def _declared_classifier(
    model: onnx.ModelProto, specs: Sequence[InputSpec]
) -> tuple[str, int] | None:
    """``(name, classes)`` of the first classifier-shaped output (the rule of
    :func:`onnx_amc.metrics.first_classifier_output`) if the declared shapes settle it.

    Any doubt gives ``None`` (no check at load time), never a wrong answer: an earlier output
    of unknown shape may turn out classifier-shaped, and an output whose axis 0 is a static
    size other than the inputs' batch is moved by the evaluator (sequence-first heads).
    """
    batches = {s.shape[0] for s in specs if s.shape and s.shape[0] is not None}
    for out in model.graph.output:
        if out.type.WhichOneof("value") != "tensor_type":
            return None
        ttype = out.type.tensor_type
        if not ttype.HasField("shape"):
            return None
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                for d in ttype.shape.dim]
        if len(dims) < 2:
            continue  # scalars and vectors are never classifier-shaped
        if any(d is None for d in dims[1:]):
            return None
        if dims[1] < 2 or any(d != 1 for d in dims[2:]):
            continue
        if dims[0] is not None and batches != {dims[0]}:
            return None
        return out.name, int(dims[1])
    return None


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

    raw_dtypes = {name: arr.dtype for name, arr in inputs.items()}
    inputs = {spec.name: _conform(p, spec, inputs[spec.name]) for spec in input_specs}
    n = _common_length(p, inputs)
    if labels is not None:
        labels = _check_labels(p, labels, n)
        if input_specs[0].classifier is not None:
            check_label_range(str(p), labels, None, *input_specs[0].classifier)
    if n == 0:
        raise InputError(f"calibration data '{p}' contains no samples")
    # Warned only now: a warning followed by an error would break the one-line contract.
    for name, arr in inputs.items():
        if raw_dtypes[name] == np.float64 and arr.dtype == np.float32:
            logger.warning(
                "calibration array '%s' in %s is float64; casting to the model's float32", name, p
            )

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


def _fmt_bytes(n: int) -> str:
    size, unit = float(n), "bytes"
    for bigger in ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if abs(size) < 1024:
            break
        size, unit = size / 1024, bigger
    return f"{n} bytes" if unit == "bytes" else f"{size:.2f} {unit}"


def _leading_bytes(p: Path) -> bytes:
    try:
        with p.open("rb") as f:
            return f.read(len(_NPY_MAGIC))
    except OSError as exc:
        raise InputError(f"cannot read calibration file '{p}': {exc.strerror or exc}") from exc


def _check_npy_header(fp: IO[bytes], total: int, what: str) -> int:
    """Refuse the ``.npy`` stream ``fp`` (``total`` bytes long) unless its header is valid,
    declares no object array and declares exactly the data that follows it; return the
    array's size in bytes.

    Why: numpy allocates what the header declares before reading a byte of data, so a
    corrupt header asking for terabytes ends in ``MemoryError``, and ``NpzFile`` hands a
    member without the ``.npy`` magic back as raw ``bytes`` instead of refusing it.
    """
    try:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(fp)
        else:  # 3.0 only exists for structured dtypes with non-latin-1 field names
            raise InputError(
                f"{what} uses .npy format {version[0]}.{version[1]}; numeric arrays are "
                "written as format 1.0 or 2.0"
            )
        header_len = fp.tell()
    except (ValueError, EOFError) as exc:  # bad magic, truncated or malformed header
        raise InputError(f"{what} is not a .npy array: {exc}") from exc
    if dtype.hasobject:
        raise InputError(
            f"{what} holds object arrays, which cannot be read without pickle (refused for "
            "safety)"
        )
    declared = math.prod(shape) * dtype.itemsize
    stored = total - header_len
    if declared != stored:
        raise InputError(
            f"{what} declares shape {list(shape)} of {dtype} ({_fmt_bytes(declared)}) but "
            f"holds {_fmt_bytes(stored)} of data; the file is truncated or corrupt"
        )
    return declared


def _available_memory() -> int | None:
    """Bytes this process can still allocate: the kernel's MemAvailable, capped by a cgroup
    (v2) limit; None where neither can be read (then MemoryError is the only guard)."""
    avail: int | None = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        cg = Path("/sys/fs/cgroup")
        limit = (cg / "memory.max").read_text().strip()
        if limit != "max":
            room = int(limit) - int((cg / "memory.current").read_text())
            avail = room if avail is None else min(avail, room)
    except (OSError, ValueError):
        pass
    return avail


def _check_fits_in_memory(what: str, nbytes: int) -> None:
    """Refuse arrays larger than free memory before numpy allocates them.

    Why: with Linux's overcommit the allocation succeeds and the kernel's OOM killer ends the
    process while the arrays are decompressed, so a small .npz that inflates to more than the
    machine has (a zip bomb, or a mistaken export) would die without a message; MemoryError
    only covers what the allocator refuses outright.
    """
    avail = _available_memory()
    if avail is not None and nbytes > avail:
        raise InputError(f"{what} holds {_fmt_bytes(nbytes)} of arrays, more than the "
                         f"{_fmt_bytes(max(avail, 0))} of memory available")


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


def _npz_member(p: Path, zf: zipfile.ZipFile, key: str) -> tuple[str, int]:
    """Check the zip member behind ``NpzFile`` key ``key``; return its name and the size of
    its array in bytes."""
    name = key if key in zf.namelist() else f"{key}.npy"  # how NpzFile maps keys to members
    info = zf.getinfo(name)
    what = f"'{name}' in '{p}'"
    try:
        with zf.open(info) as fp:
            nbytes = _check_npy_header(fp, info.file_size, what)
    except _ZIP_READ_ERRORS as exc:
        raise InputError(f"{what} is corrupt: {exc}") from exc
    return name, nbytes


def _read_npz(
    p: Path, specs: Sequence[InputSpec]
) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    head = _leading_bytes(p)
    if head.startswith(_NPY_MAGIC):
        raise InputError(f"calibration file '{p}' has extension .npz but holds a single array")
    if not head.startswith(_ZIP_MAGICS):
        raise InputError(
            f"calibration file '{p}' is not an .npz archive (a zip of .npy arrays, as written "
            "by numpy.savez)"
        )
    data = _safe_np_load(p)
    if not isinstance(data, np.lib.npyio.NpzFile):  # pragma: no cover - the magic says zip
        raise InputError(f"calibration file '{p}' is not an .npz archive")
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
        wanted = names + ([label_key] if label_key is not None and label_key in keys else [])
        members = {key: _npz_member(p, data.zip, key) for key in wanted}
        _check_fits_in_memory(f"calibration file '{p}'",
                              sum(nbytes for _, nbytes in members.values()))
        arrays: dict[str, np.ndarray] = {}
        for key in wanted:
            member = members[key][0]
            try:
                arrays[key] = data[key]
            except (ValueError, *_ZIP_READ_ERRORS) as exc:  # the header was fine: damaged data
                raise InputError(f"'{member}' in '{p}' is corrupt: {exc}") from exc
            except MemoryError as exc:  # consistent sizes, but too big (e.g. a zip bomb)
                raise InputError(f"'{member}' in '{p}' is too large to load into memory") from exc
    labels = arrays.pop(label_key) if label_key is not None and label_key in arrays else None
    return arrays, labels


def _read_npy(
    p: Path, specs: Sequence[InputSpec]
) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    if len(specs) != 1:
        raise InputError(
            f"calibration file '{p}' is a single .npy array but the model has "
            f"{len(specs)} inputs {[s.name for s in specs]}; use an .npz keyed by input name"
        )
    head = _leading_bytes(p)
    if head.startswith(_ZIP_MAGICS):
        raise InputError(f"calibration file '{p}' has extension .npy but is an archive")
    if not head.startswith(_NPY_MAGIC):
        raise InputError(f"calibration file '{p}' is not an .npy file (as written by numpy.save)")
    try:
        with p.open("rb") as fp:
            nbytes = _check_npy_header(fp, p.stat().st_size, f"calibration file '{p}'")
    except OSError as exc:
        raise InputError(f"cannot read calibration file '{p}': {exc.strerror or exc}") from exc
    _check_fits_in_memory(f"calibration file '{p}'", nbytes)
    try:
        arr = _safe_np_load(p)
    except MemoryError as exc:
        raise InputError(f"calibration file '{p}' is too large to load into memory") from exc
    if not isinstance(arr, np.ndarray):  # pragma: no cover - the magic says .npy
        raise InputError(f"calibration file '{p}' has extension .npy but is an archive")
    return {specs[0].name: arr}, None


def _fmt_shape(shape: Iterable[int | None]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _conform(p: Path, spec: InputSpec, arr: np.ndarray) -> np.ndarray:
    """Check ``arr`` against ``spec`` (shape after axis 0, dtype, finite values) and cast if
    allowed."""
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
    out = _cast(p, spec, arr)
    _check_finite(p, spec.name, out)
    return out


def _check_finite(p: Path | str, name: str, arr: np.ndarray) -> None:
    """Refuse NaN/Inf (checked after the cast: float64 values beyond float32 become Inf)."""
    if arr.dtype.kind not in "fc":
        return
    bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
    if bad:
        raise InputError(
            f"calibration array '{name}' in '{p}' has {bad} non-finite value(s) (NaN or Inf) "
            f"out of {arr.size}; clean or drop those samples"
        )


def _cast(p: Path | str, spec: InputSpec, arr: np.ndarray) -> np.ndarray:
    """``arr`` as the model's dtype when the cast keeps its meaning (see module docs); the
    caller warns about float64 -> float32."""
    want = np.dtype(spec.dtype)
    if arr.dtype == want:
        return arr
    same_family = arr.dtype.kind == want.kind or (arr.dtype.kind == "u" and want.kind == "i")
    if same_family and np.can_cast(arr.dtype, want, casting="safe"):
        return arr.astype(want)
    if arr.dtype == np.float64 and want == np.float32:
        with np.errstate(over="ignore"):  # values beyond float32 become Inf: refused next
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


def check_label_range(
    source: str,
    labels: np.ndarray | None,
    class_names: Sequence[str] | None,
    output: str,
    classes: int,
) -> None:
    """Refuse labels that are not class indices of the model's classifier output.

    Why: the metrics index the ``[N, classes]`` scores with the labels, so a label beyond
    them ends in an ``IndexError`` mid-run (a negative one silently scores the wrong
    class).  Image folders are judged by their number of class subfolders, so that every
    part of a split fails alike, even one that holds no image of the surplus classes.

    Raises:
        InputError: naming ``source``, the largest label and ``output``.
    """
    if class_names is not None and len(class_names) > classes:
        raise InputError(
            f"image folder '{source}' has {len(class_names)} class subfolders but the model's "
            f"output '{output}' has {classes} classes"
        )
    if labels is None or not len(labels):
        return
    top = int(np.max(labels))
    if top >= classes:
        raise InputError(
            f"labels in '{source}' go up to {top} but the model's output '{output}' has "
            f"{classes} classes (labels are class indices 0..{classes - 1})"
        )
    if int(np.min(labels)) < 0:
        raise InputError(f"labels in '{source}' contain negative class indices")


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
    defaults = ImageOptions()
    for label, vals in (("mean", opts.mean), ("std", opts.std)):
        if len(vals) in (1, channels):
            continue
        if vals == getattr(defaults, label):
            # The user never passed it: name the default rather than a count they never gave.
            raise InputError(
                f"model input '{spec.name}' has {channels} channel(s) but the default ImageNet "
                f"mean/std has {len(vals)} values; pass --mean and --std with {channels} "
                f"value{'s' if channels > 1 else ''} each, as the model was trained with"
            )
        raise InputError(
            f"image {label} has {len(vals)} values but model input '{spec.name}' has "
            f"{channels} channel(s)"
        )
    if not all(math.isfinite(v) for v in (*opts.mean, *opts.std, opts.scale)):
        raise InputError("image mean, std and scale must be finite numbers")
    if any(s == 0 for s in opts.std):
        raise InputError("image std values must be non-zero")
    return _ImageGeometry(height, width, channels, layout)


def _list_images(folder: Path) -> list[Path]:
    return sorted(
        f
        for f in folder.iterdir()
        if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_EXTENSIONS
    )


def _collect_images(p: Path) -> tuple[list[Path], list[int] | None, tuple[str, ...] | None]:
    """Image files of ``p`` with their labels and class names (see module docs); logs nothing,
    so that a later error stays the only line."""
    subdirs = sorted(d for d in p.iterdir() if d.is_dir() and not d.name.startswith("."))
    class_dirs = [(d, imgs) for d in subdirs if (imgs := _list_images(d))]  # listed once
    if not class_dirs:
        return _list_images(p), None, None
    files: list[Path] = []
    labels: list[int] = []
    for idx, (_, imgs) in enumerate(class_dirs):
        files.extend(imgs)
        labels.extend([idx] * len(imgs))
    return files, labels, tuple(d.name for d, _ in class_dirs)


class _UnreadableImageError(Exception):
    """Pillow could not decode one image; the message says why."""


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
    # Before the preprocessing checks: how to decode images is moot when there are none.
    files, labels_list, class_names = _collect_images(p)
    if not files:
        raise InputError(
            f"image folder '{p}' contains no images (extensions: {sorted(IMAGE_EXTENSIONS)})"
        )
    if spec.classifier is not None:
        check_label_range(str(p), None, class_names, *spec.classifier)
    geom = _image_geometry(p, spec, opts)

    try:
        import PIL  # noqa: F401  (imported lazily: arrays need no Pillow)
    except ImportError as exc:  # pragma: no cover - Pillow is a declared dependency
        raise InputError("reading image folders needs Pillow (pip install pillow)") from exc

    order = np.arange(len(files))
    if size is not None:
        order = np.random.default_rng(seed).permutation(len(files))
    wanted = len(files) if size is None else min(size, len(files))

    # Decode in shuffled order and stop once enough images decoded, so that
    # --calib-size 500 on ImageNet-val does not decode 50k files.
    arrays: list[np.ndarray] = []
    kept: list[int] = []
    unreadable: list[tuple[Path, str]] = []
    for i in order:
        if len(arrays) == wanted:
            break
        try:
            arrays.append(_read_image(files[i], geom, opts))
        except _UnreadableImageError as exc:
            unreadable.append((files[i], str(exc)))
            continue
        kept.append(int(i))
    if not arrays:
        first, why = unreadable[0]
        raise InputError(
            f"image folder '{p}': none of the {len(files)} image files could be read "
            f"(first: {first.relative_to(p)}: {why})"
        )
    batch = np.stack(arrays).astype(spec.dtype, copy=False)
    _check_finite(p, spec.name, batch)  # e.g. a tiny --std overflowing float32

    # Logged only now that the folder is usable: a warning before an error would make two lines.
    if class_names is not None:
        loose = _list_images(p)
        if loose:
            logger.warning(
                "%d image(s) directly in %s are ignored because it has class subfolders",
                len(loose),
                p,
            )
        logger.info("image folder %s: %d classes %s", p, len(class_names), class_names[:10])
    if size is not None and size > len(files):
        logger.warning(
            "calibration size %d exceeds the %d images in %s; using all of them",
            size,
            len(files),
            p,
        )
    if unreadable:
        logger.warning(
            "skipped %d unreadable image(s) in %s (first: %s: %s)",
            len(unreadable),
            p,
            unreadable[0][0],
            unreadable[0][1],
        )
    labels = None if labels_list is None else np.asarray(labels_list, dtype=np.int64)[kept]
    return CalibrationSet(
        inputs={spec.name: batch}, labels=labels, source=str(p), class_names=class_names
    )


def _read_image(f: Path, geom: _ImageGeometry, opts: ImageOptions) -> np.ndarray:
    """Decode, resize, crop and normalise one image.

    Raises:
        _UnreadableImageError: Pillow cannot read it (the caller skips it).
    """
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
        raise _UnreadableImageError(str(exc) or type(exc).__name__) from exc
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
