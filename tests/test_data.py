"""Calibration loading, validation and splitting (onnx_amc.data).

The model builders at the top are reused by the metrics/latency/evaluate tests.
"""

from __future__ import annotations

import io
import logging
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx_amc.data import (
    CalibrationSet,
    ImageOptions,
    InputSpec,
    input_specs_from_model,
    load_calibration,
    split_calibration,
)
from onnx_amc.errors import InputError
from onnx_amc.evaluate import Evaluator

ASSETS = Path(__file__).resolve().parents[1] / "onnx_amc" / "assets"

# --------------------------------------------------------------------------- model builders


def make_classifier(
    batch: int | str = "N",
    channels: int = 3,
    hw: int = 8,
    classes: int = 5,
    seed: int = 0,
    nhwc: bool = False,
) -> onnx.ModelProto:
    """Conv(3x3) -> Relu -> GlobalAveragePool -> Flatten -> Gemm classifier."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((4, channels, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    fw = rng.standard_normal((classes, 4)).astype(np.float32)
    fb = rng.standard_normal(classes).astype(np.float32)
    nodes = []
    conv_in = "x"
    if nhwc:
        nodes.append(helper.make_node("Transpose", ["x"], ["x_nchw"], perm=[0, 3, 1, 2]))
        conv_in = "x_nchw"
    nodes += [
        helper.make_node("Conv", [conv_in, "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "fw", "fb"], ["logits"], transB=1),
    ]
    in_shape = [batch, hw, hw, channels] if nhwc else [batch, channels, hw, hw]
    graph = helper.make_graph(
        nodes,
        "classifier",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, classes])],
        [
            numpy_helper.from_array(w, "w"),
            numpy_helper.from_array(b, "b"),
            numpy_helper.from_array(fw, "fw"),
            numpy_helper.from_array(fb, "fb"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def make_two_input() -> onnx.ModelProto:
    """x: float [N, 4], ids: int64 [N, 2] -> y = x * 2, z = ids + 1."""
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["x", "x"], ["y"]),
            helper.make_node("Add", ["ids", "one"], ["z"]),
        ],
        "two",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4]),
            helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 2]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4]),
            helper.make_tensor_value_info("z", TensorProto.INT64, ["N", 2]),
        ],
        [numpy_helper.from_array(np.array(1, dtype=np.int64), "one")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def specs(model: onnx.ModelProto) -> list[InputSpec]:
    return input_specs_from_model(model)


# --------------------------------------------------------------------------- specs


def test_input_specs_dynamic_and_initializer_inputs() -> None:
    model = make_classifier(batch="N")
    # Old-style exporters list weights among inputs: they must be skipped.
    model.graph.input.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, [4, 3, 3, 3]))
    (spec,) = input_specs_from_model(model)
    assert spec == InputSpec("x", np.dtype(np.float32), (None, 3, 8, 8))


# --------------------------------------------------------------------------- arrays


@pytest.fixture()
def clf() -> onnx.ModelProto:
    return make_classifier()


def _x(n: int = 10, dtype: type = np.float32) -> np.ndarray:
    return np.random.default_rng(1).standard_normal((n, 3, 8, 8)).astype(dtype)


def test_npz_with_labels(tmp_path: Path, clf: onnx.ModelProto) -> None:
    f = tmp_path / "c.npz"
    np.savez(f, x=_x(), labels=np.arange(10) % 5)
    calib = load_calibration(f, specs(clf))
    assert len(calib) == 10
    assert calib.inputs["x"].dtype == np.float32
    np.testing.assert_array_equal(calib.labels, np.arange(10) % 5)
    assert calib.source == str(f)


def test_npy_single_input(tmp_path: Path, clf: onnx.ModelProto) -> None:
    f = tmp_path / "c.npy"
    np.save(f, _x(4))
    calib = load_calibration(f, specs(clf))
    assert len(calib) == 4 and calib.labels is None


def test_size_is_seeded_shuffle(tmp_path: Path) -> None:
    clf20 = make_classifier(classes=20)  # the labels double as sample ids: 20 classes
    f = tmp_path / "c.npz"
    x = _x(20)
    np.savez(f, x=x, labels=np.arange(20))
    a = load_calibration(f, specs(clf20), size=6, seed=3)
    b = load_calibration(f, specs(clf20), size=6, seed=3)
    c = load_calibration(f, specs(clf20), size=6, seed=4)
    assert len(a) == 6
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.labels, c.labels)
    np.testing.assert_array_equal(a.inputs["x"], x[a.labels])


def test_size_larger_than_data_warns(
    tmp_path: Path, clf: onnx.ModelProto, caplog: pytest.LogCaptureFixture
) -> None:
    f = tmp_path / "c.npy"
    np.save(f, _x(3))
    with caplog.at_level(logging.WARNING):
        calib = load_calibration(f, specs(clf), size=50)
    assert len(calib) == 3
    assert "exceeds" in caplog.text


def test_float64_is_cast_with_warning(
    tmp_path: Path, clf: onnx.ModelProto, caplog: pytest.LogCaptureFixture
) -> None:
    f = tmp_path / "c.npy"
    np.save(f, _x(2, np.float64))
    with caplog.at_level(logging.WARNING):
        calib = load_calibration(f, specs(clf))
    assert calib.inputs["x"].dtype == np.float32
    assert "float64" in caplog.text


def test_two_inputs_int_widening(tmp_path: Path) -> None:
    model = make_two_input()
    f = tmp_path / "c.npz"
    np.savez(f, x=np.zeros((3, 4), np.float32), ids=np.ones((3, 2), np.int32))
    calib = load_calibration(f, specs(model))
    assert calib.inputs["ids"].dtype == np.int64


def _one_line(exc: pytest.ExceptionInfo[InputError]) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize(
    ("arrays", "fragments"),
    [
        ({"y": _x(2)}, ["lacks", "'x'"]),
        ({"x": _x(2), "extra": np.zeros(2)}, ["unexpected", "extra"]),
        ({"x": _x(2)[:, :, :4]}, ["shape [2, 3, 4, 8]", "axis 2"]),
        ({"x": _x(2)[0]}, ["rank 3", "sample axis"]),
        ({"x": _x(2).astype(np.int32)}, ["dtype int32", "float32"]),
        ({"x": _x(3), "labels": np.arange(2)}, ["2 entries", "3 samples"]),
        ({"x": _x(3), "labels": np.zeros((3, 5))}, ["1-D"]),
        ({"x": _x(3), "labels": np.array([0.5, 1, 2])}, ["integer"]),
        ({"x": _x(3), "labels": np.array([0, -1, 2])}, ["negative"]),
        ({"x": _x(0)}, ["no samples"]),
    ],
)
def test_npz_errors(
    tmp_path: Path, clf: onnx.ModelProto, arrays: dict[str, np.ndarray], fragments: list[str]
) -> None:
    f = tmp_path / "bad.npz"
    np.savez(f, **arrays)
    with pytest.raises(InputError) as exc:
        load_calibration(f, specs(clf))
    msg = _one_line(exc)
    assert "bad.npz" in msg
    for frag in fragments:
        assert frag in msg


def test_int_vs_float_two_inputs(tmp_path: Path) -> None:
    f = tmp_path / "c.npz"
    np.savez(f, x=np.zeros((3, 4), np.float32), ids=np.ones((3, 2), np.float32))
    with pytest.raises(InputError, match="'ids'.*float32.*int64"):
        load_calibration(f, specs(make_two_input()))


def test_inputs_disagree_on_count(tmp_path: Path) -> None:
    f = tmp_path / "c.npz"
    np.savez(f, x=np.zeros((3, 4), np.float32), ids=np.ones((2, 2), np.int64))
    with pytest.raises(InputError, match="number of samples"):
        load_calibration(f, specs(make_two_input()))


def test_missing_file_and_unknown_extension(tmp_path: Path, clf: onnx.ModelProto) -> None:
    with pytest.raises(InputError, match="does not exist") as exc:
        load_calibration(tmp_path / "nope.npz", specs(clf))
    assert "nope.npz" in _one_line(exc)
    f = tmp_path / "data.csv"
    f.write_text("1,2,3\n")
    with pytest.raises(InputError, match=r"data\.csv.*unknown extension '\.csv'"):
        load_calibration(f, specs(clf))


def test_npy_for_multi_input_model(tmp_path: Path) -> None:
    f = tmp_path / "c.npy"
    np.save(f, np.zeros((3, 4), np.float32))
    with pytest.raises(InputError, match="2 inputs"):
        load_calibration(f, specs(make_two_input()))


def test_pickled_and_corrupt_files_refused(tmp_path: Path, clf: onnx.ModelProto) -> None:
    f = tmp_path / "obj.npy"
    np.save(f, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="obj.npy.*pickle"):
        load_calibration(f, specs(clf))
    g = tmp_path / "obj.npz"
    np.savez(g, x=np.array([None, 1], dtype=object))
    with pytest.raises(InputError, match="obj.npz.*object arrays"):
        load_calibration(g, specs(clf))
    h = tmp_path / "junk.npz"
    h.write_bytes(b"this is not a zip file at all")
    with pytest.raises(InputError, match="junk.npz"):
        load_calibration(h, specs(clf))


def test_bad_size(tmp_path: Path, clf: onnx.ModelProto) -> None:
    with pytest.raises(InputError, match="positive"):
        load_calibration(tmp_path, specs(clf), size=0)


def test_labels_beyond_the_model_classes_are_refused_at_load(
    tmp_path: Path, clf: onnx.ModelProto
) -> None:
    assert specs(clf)[0].classifier == ("logits", 5)
    f = tmp_path / "c.npz"
    np.savez(f, x=_x(3), labels=np.array([0, 7, 2]))
    with pytest.raises(InputError) as exc:
        load_calibration(f, specs(clf))
    msg = _one_line(exc)
    assert "c.npz" in msg and "go up to 7" in msg and "output 'logits' has 5 classes" in msg


def test_evaluator_refuses_labels_beyond_classes_the_shapes_did_not_declare() -> None:
    model = make_classifier()
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_param = "C"  # classes unknown
    assert input_specs_from_model(model)[0].classifier is None
    calib = CalibrationSet(inputs={"x": _x(3)}, labels=np.array([0, 5, 1]), source="mem")
    with pytest.raises(InputError, match="'mem' go up to 5 .*'logits' has 5 classes"):
        Evaluator(model, calib)


@pytest.mark.parametrize(
    "setup",
    ["float32 nan/inf", "float64 nan", "float64 beyond float32"],
)
def test_non_finite_inputs_are_refused(
    tmp_path: Path, clf: onnx.ModelProto, setup: str, caplog: pytest.LogCaptureFixture
) -> None:
    x = _x(4, np.float64 if setup.startswith("float64") else np.float32)
    if setup == "float64 beyond float32":
        x[1, 0, 0, :3] = 1e300
    else:
        x[0, 0, 0, 0] = np.nan
        x[1, 0, 0, :2] = [np.inf, -np.inf]
    f = tmp_path / "c.npz"
    np.savez(f, x=x)
    with caplog.at_level(logging.WARNING), pytest.raises(InputError) as exc:
        load_calibration(f, specs(clf))
    msg = _one_line(exc)
    assert "'x'" in msg and "c.npz" in msg and "3 non-finite" in msg
    assert not caplog.records  # no float64 warning before the error: one line only


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _huge_header_npy() -> bytes:
    """A valid .npy header declaring 12 TiB of float32, followed by 64 bytes."""
    buf = io.BytesIO()
    header = {"descr": "<f4", "fortran_order": False, "shape": (2**30, 3, 32, 32)}
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue() + bytes(64)


def test_npz_member_that_is_not_npy_is_refused(tmp_path: Path, clf: onnx.ModelProto) -> None:
    f = tmp_path / "junk_member.npz"
    with zipfile.ZipFile(f, "w") as zf:
        zf.writestr("x.npy", b"junk bytes, no .npy magic")
    with pytest.raises(InputError) as exc:  # not AttributeError on the member's raw bytes
        load_calibration(f, specs(clf))
    msg = _one_line(exc)
    assert "'x.npy' in" in msg and "junk_member.npz' is not a .npy array" in msg


@pytest.mark.parametrize(
    ("name", "fragments"),
    [
        ("huge.npz", ["'x.npy' in", "declares shape [1073741824, 3, 32, 32]", "12.00 TiB"]),
        ("huge.npy", ["huge.npy' declares shape [1073741824, 3, 32, 32]", "64 bytes"]),
        ("short.npy", ["declares shape [10, 3, 8, 8]", "truncated"]),
        ("short.npz", ["'x.npy' in", "declares shape [10, 3, 8, 8]", "truncated"]),
    ],
)
def test_npy_header_must_match_the_stored_size(
    tmp_path: Path, clf: onnx.ModelProto, name: str, fragments: list[str]
) -> None:
    data = _huge_header_npy() if name.startswith("huge") else _npy_bytes(_x(10))[:-4]
    f = tmp_path / name
    if name.endswith(".npz"):
        with zipfile.ZipFile(f, "w") as zf:
            zf.writestr("x.npy", data)
    else:
        f.write_bytes(data)
    with pytest.raises(InputError) as exc:  # not MemoryError / a reshape error
        load_calibration(f, specs(clf))
    msg = _one_line(exc)
    for frag in fragments:
        assert frag in msg


@pytest.mark.parametrize("ext", [".npz", ".npy"])
def test_arrays_larger_than_free_memory_are_refused_before_loading(
    tmp_path: Path, clf: onnx.ModelProto, monkeypatch: pytest.MonkeyPatch, ext: str
) -> None:
    """A small .npz of zeros inflating to 48 MiB (a zip bomb in miniature) on a machine with
    16 MiB free: refused from the headers, where loading would end in the OOM killer."""
    from onnx_amc import data as data_mod

    x = np.zeros((512, 3, 8, 1024), np.float32)  # 48 MiB
    f = tmp_path / f"big{ext}"
    if ext == ".npz":
        np.savez_compressed(f, x=x)
        assert f.stat().st_size < 1 << 20
    else:
        np.save(f, x)
    monkeypatch.setattr(data_mod, "_available_memory", lambda: 16 << 20)
    with pytest.raises(InputError) as exc:
        load_calibration(f, specs(clf))
    assert "48.00 MiB of arrays, more than the 16.00 MiB of memory available" in _one_line(exc)
    monkeypatch.setattr(data_mod, "_available_memory", lambda: None)  # unknown: no refusal
    with pytest.raises(InputError, match="shape"):  # 8 x 1024 is not the model's 8 x 8
        load_calibration(f, specs(clf))


def test_available_memory_is_read_on_linux() -> None:
    from onnx_amc.data import _available_memory

    avail = _available_memory()
    assert avail is None or avail > 0
    if Path("/proc/meminfo").is_file():
        assert avail is not None


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        ("text.npz", b"a,b\n1,2\n", "text.npz' is not an .npz archive"),
        ("empty.npz", b"", "empty.npz' is not an .npz archive"),
        ("text.npy", b"a,b\n1,2\n", "text.npy' is not an .npy file"),
        ("zip.npy", None, "zip.npy' has extension .npy but is an archive"),
    ],
)
def test_magic_bytes_are_checked_before_loading(
    tmp_path: Path, clf: onnx.ModelProto, name: str, content: bytes | None, fragment: str
) -> None:
    f = tmp_path / name
    if content is None:
        with zipfile.ZipFile(f, "w") as zf:
            zf.writestr("x.npy", _npy_bytes(_x(2)))
    else:
        f.write_bytes(content)
    with pytest.raises(InputError) as exc:
        load_calibration(f, specs(clf))
    msg = _one_line(exc)
    assert fragment in msg
    assert "pickle" not in msg


# --------------------------------------------------------------------------- images


def _png(path: Path, rgb: tuple[int, int, int], size: tuple[int, int] = (12, 10)) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, rgb).save(path)


def test_image_folder_with_classes_and_corrupt_file(
    tmp_path: Path, clf: onnx.ModelProto, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "imgs"
    _png(root / "cat" / "a.png", (255, 0, 0))
    _png(root / "cat" / "b.png", (255, 0, 0), size=(30, 9))
    _png(root / "dog" / "c.png", (0, 0, 255))
    (root / "dog" / "broken.png").write_bytes(b"not a png")
    (root / "dog" / "notes.txt").write_text("ignored")
    opts = ImageOptions(mean=(0.0,), std=(1.0,))
    with caplog.at_level(logging.WARNING):
        calib = load_calibration(root, specs(clf), image_options=opts)
    assert "skipped 1 unreadable" in caplog.text
    assert calib.inputs["x"].shape == (3, 3, 8, 8)
    assert calib.inputs["x"].dtype == np.float32
    np.testing.assert_array_equal(calib.labels, [0, 0, 1])
    assert calib.class_names == ("cat", "dog")
    red = calib.inputs["x"][0]
    np.testing.assert_allclose(red[0], 1.0, atol=1e-6)
    np.testing.assert_allclose(red[1:], 0.0, atol=1e-6)


def test_image_normalisation_bgr_nhwc(tmp_path: Path) -> None:
    model = make_classifier(nhwc=True)
    root = tmp_path / "flat"
    _png(root / "a.png", (255, 128, 0))
    opts = ImageOptions(mean=(0.5, 0.5, 0.5), std=(0.5, 0.25, 0.5), channel_order="BGR")
    calib = load_calibration(root, specs(model), image_options=opts)
    assert calib.labels is None and calib.class_names is None
    x = calib.inputs["x"]
    assert x.shape == (1, 8, 8, 3)
    np.testing.assert_allclose(x[0, 0, 0], [-1.0, (128 / 255 - 0.5) / 0.25, 1.0], atol=1e-5)


def test_image_size_subsample_and_grayscale(tmp_path: Path) -> None:
    model = make_classifier(channels=1, hw=6)
    root = tmp_path / "flat"
    for i in range(6):
        _png(root / f"{i}.png", (i * 40, i * 40, i * 40))
    opts = ImageOptions(mean=(0.0,), std=(1.0,))
    a = load_calibration(root, specs(model), image_options=opts, size=3, seed=1)
    b = load_calibration(root, specs(model), image_options=opts, size=3, seed=1)
    assert a.inputs["x"].shape == (3, 1, 6, 6)
    np.testing.assert_array_equal(a.inputs["x"], b.inputs["x"])


@pytest.mark.parametrize(
    ("setup", "opts", "fragment"),
    [
        ("empty", ImageOptions(), "contains no images"),
        ("corrupt", ImageOptions(), "none of the 2 image files could be read"),
        ("good", ImageOptions(mean=(0.1, 0.2)), "mean has 2 values"),
        ("good", ImageOptions(size=(9, 9)), "conflicts"),
        ("good", ImageOptions(mean=(float("nan"),)), "must be finite"),
        ("classes", ImageOptions(), "6 class subfolders but the model's output 'logits' has 5"),
    ],
)
def test_image_folder_errors(
    tmp_path: Path, clf: onnx.ModelProto, setup: str, opts: ImageOptions, fragment: str
) -> None:
    root = tmp_path / "imgs"
    root.mkdir()
    if setup == "corrupt":
        (root / "a.jpg").write_bytes(b"garbage")
        (root / "b.png").write_bytes(b"")
    elif setup == "good":
        _png(root / "a.png", (1, 2, 3))
    elif setup == "classes":
        for c in range(6):
            _png(root / f"c{c}" / "a.png", (1, 2, 3))
    with pytest.raises(InputError) as exc:
        load_calibration(root, specs(clf), image_options=opts)
    assert fragment in _one_line(exc)


def test_unreadable_only_folder_error_names_the_file_and_warns_nothing(
    tmp_path: Path, clf: onnx.ModelProto, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "a.png").write_bytes(b"not a png")
    with caplog.at_level(logging.WARNING), pytest.raises(InputError) as exc:
        load_calibration(tmp_path, specs(clf), image_options=ImageOptions(), size=5)
    msg = _one_line(exc)
    assert "none of the 1 image files could be read (first: a.png: cannot identify" in msg
    assert not caplog.records  # neither "skipped" nor "calibration size exceeds"


@pytest.mark.parametrize("setup", ["empty", "no image files", "images"])
def test_one_channel_model_with_default_mean(
    tmp_path: Path, setup: str, caplog: pytest.LogCaptureFixture
) -> None:
    gray = make_classifier(channels=1)
    if setup == "no image files":
        (tmp_path / "notes.txt").write_text("not an image")
    elif setup == "images":
        _png(tmp_path / "cls" / "a.png", (9, 9, 9))
        _png(tmp_path / "loose.png", (9, 9, 9))  # ignored, but not warned about before the error
    with caplog.at_level(logging.WARNING), pytest.raises(InputError) as exc:
        load_calibration(tmp_path, specs(gray))
    msg = _one_line(exc)
    if setup == "images":
        assert "the default ImageNet mean/std has 3 values" in msg
        assert "--mean and --std with 1 value each" in msg
        assert not caplog.records
    else:  # the missing images are the problem to report, not the preprocessing
        assert "contains no images" in msg


def _cli(*args: str | Path) -> subprocess.CompletedProcess:
    from tests.cli_runner import invoke  # in this process: every case ends before any work

    return invoke(*args)


@pytest.mark.parametrize(
    ("case", "fragment"),
    [
        ("evaluate", "go up to 99 but the model's output 'logits' has 10 classes"),
        ("prune", "go up to 99 but the model's output 'logits' has 10 classes"),
        ("compress", "go up to 99 but the model's output 'logits' has 10 classes"),
        ("12 class folders", "has 12 class subfolders but the model's output 'logits' has 10"),
        ("unreadable images", "none of the 1 image files could be read (first: a.png"),
        ("no --mean", "default ImageNet mean/std has 3 values"),
    ],
)
def test_cli_bad_calibration_is_one_line_exit_2(tmp_path: Path, case: str, fragment: str) -> None:
    from PIL import Image

    model = ASSETS / "digits_cnn.onnx"
    with np.load(ASSETS / "digits_calib.npz") as d:
        x, y = d["input"][:40], d["labels"][:40].copy()
    y[0] = 99  # one bad label: refused however the data is later split
    npz = tmp_path / "labels99.npz"
    np.savez(npz, input=x, labels=y)
    folder = tmp_path / "imgs"
    gray = ["--mean", "0", "--std", "1"]
    if case == "12 class folders":
        for c in range(12):
            (folder / f"c{c:02d}").mkdir(parents=True)
            Image.new("L", (32, 32), 20 * c).save(folder / f"c{c:02d}" / "a.png")
    elif case == "unreadable images":
        folder.mkdir()
        (folder / "a.png").write_bytes(b"not a png")
    elif case == "no --mean":
        folder.mkdir()
        Image.new("L", (32, 32), 7).save(folder / "a.png")
        gray = []
    out = tmp_path / "out.onnx"
    args: list[str | Path] = {
        "evaluate": ["evaluate", model, "--calib", npz],
        "prune": ["prune", model, "-o", out, "--keep", "0.5", "--calib", npz, "--reconstruct"],
        "compress": ["compress", model, "-o", out, "--flops", "0.5", "--calib", npz,
                     "--episodes", "2"],
    }.get(case, ["evaluate", model, "--calib", folder, *gray])
    r = _cli(*args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("onnx-amc: error: "), r.stderr
    assert fragment in r.stderr
    assert not out.exists()


def test_image_folder_needs_single_image_input(tmp_path: Path) -> None:
    _png(tmp_path / "a.png", (1, 2, 3))
    with pytest.raises(InputError, match="single-input"):
        load_calibration(tmp_path, specs(make_two_input()))


# --------------------------------------------------------------------------- split


def _calib(n: int, labels: np.ndarray | None) -> CalibrationSet:
    return CalibrationSet(
        inputs={"x": np.arange(n, dtype=np.float32)[:, None]}, labels=labels, source="mem"
    )


def test_split_deterministic_disjoint_stratified() -> None:
    labels = np.repeat(np.arange(4), [10, 6, 4, 20])
    calib = _calib(len(labels), labels)
    r1, e1 = split_calibration(calib, 0.5, seed=7)
    r2, e2 = split_calibration(calib, 0.5, seed=7)
    np.testing.assert_array_equal(r1.inputs["x"], r2.inputs["x"])
    np.testing.assert_array_equal(e1.inputs["x"], e2.inputs["x"])
    ids_r = set(r1.inputs["x"][:, 0].tolist())
    ids_e = set(e1.inputs["x"][:, 0].tolist())
    assert not ids_r & ids_e
    assert len(ids_r | ids_e) == len(labels)
    assert len(r1) == 20
    for c, count in enumerate([10, 6, 4, 20]):
        assert abs(int(np.sum(r1.labels == c)) - count / 2) <= 1
    # Labels stay attached to their samples.
    np.testing.assert_array_equal(r1.labels, labels[r1.inputs["x"][:, 0].astype(int)])
    r3, _ = split_calibration(calib, 0.5, seed=8)
    assert not np.array_equal(r1.inputs["x"], r3.inputs["x"])


def test_split_without_labels_and_errors() -> None:
    calib = _calib(9, None)
    recon, ev = split_calibration(calib, 0.3)
    assert (len(recon), len(ev)) == (3, 6)
    assert recon.labels is None
    tiny_r, tiny_e = split_calibration(_calib(2, None), 0.01)
    assert (len(tiny_r), len(tiny_e)) == (1, 1)
    with pytest.raises(ValueError):
        split_calibration(calib, 1.0)
    with pytest.raises(ValueError):
        split_calibration(_calib(1, None))
