"""Where the benchmarks' digits calibration comes from (benchmarks/bench_latency_search.prepare).

Why: with ``calib_from="train"`` the searches calibrate on training digits and every held-out
digit scores them; a single held-out digit in the calibration set would leak the test set
into the reward, and a split that no longer matches the committed models would calibrate on
digits they never saw."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
pytest.importorskip("sklearn")
from bench_latency_search import CALIB, prepare  # noqa: E402


def _rows(x: np.ndarray) -> set[bytes]:
    return {r.tobytes() for r in x.reshape(len(x), -1)}


def test_training_calibration_is_disjoint_from_the_held_out_test(tmp_path: Path) -> None:
    path, calib, held = prepare("digits_vgg", tmp_path, n=200, calib_from="train")
    assert path.is_file()
    with np.load(calib) as f:
        x, y = f["input"], f["labels"]
    with np.load(CALIB) as f:
        x_held = f["input"]
    assert x.shape == (200, *x_held.shape[1:]) and y.shape == (200,)
    assert set(np.unique(y)) == set(range(10))  # a shuffled split, not one class
    assert not _rows(x) & _rows(x_held)
    assert held is not None and len(held) == len(x_held)
    assert _rows(held.inputs["input"]) == _rows(x_held)


def test_held_out_calibration_keeps_its_old_meaning(tmp_path: Path) -> None:
    path, calib, held = prepare("digits_vgg", tmp_path, n=200)
    assert calib == CALIB and held is None


def test_more_training_digits_than_there_are_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="training digits"):
        prepare("digits_resnet", tmp_path, n=5000, calib_from="train")
