"""The paired accuracy test the latency benchmark reports next to its verdicts
(benchmarks/paired.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from paired import deciding_point, mcnemar_p, paired  # noqa: E402


@pytest.mark.parametrize(("a", "b"), [(0, 6), (1, 9), (3, 3), (5, 12), (0, 0), (40, 25)])
def test_mcnemar_matches_the_binomial_test(a: int, b: int) -> None:
    stats = pytest.importorskip("scipy.stats")
    want = 1.0 if a + b == 0 else stats.binomtest(min(a, b), a + b, 0.5).pvalue
    assert mcnemar_p(a, b) == pytest.approx(want, rel=1e-9)


def test_only_discordant_samples_count() -> None:
    a = np.array([1, 1, 0, 0, 1, 1], bool)
    b = np.array([1, 0, 1, 1, 1, 0], bool)
    only_a, only_b, p = paired(a, b)
    assert (only_a, only_b) == (2, 2)
    assert p == 1.0
    with pytest.raises(ValueError):
        paired(a, b[:3])


def test_deciding_point_names_the_loss_and_the_win() -> None:
    n = 400
    search = np.ones(n, bool)
    search[:20] = False  # 0.95
    better = np.ones(n, bool)  # 1.00: a faster point far more accurate
    slightly = search.copy()
    slightly[0] = True  # one sample more
    worse = search.copy()
    worse[20:60] = False  # 0.85
    loss = deciding_point([(0.4, 1.0, better, "F 0.3")], 0.5, search)
    assert loss.startswith("loss to F 0.3") and "+20 samples" in loss and "p = 0.00" in loss
    noise = deciding_point([(0.45, float(slightly.mean()), slightly, "F 0.35")], 0.5, search)
    assert noise.startswith("loss") and "p = 1.00" in noise
    win = deciding_point([(0.6, 1.0, better, "F 0.6"), (0.4, float(worse.mean()), worse,
                                                            "F 0.3")], 0.5, search)
    assert win.startswith("win; ") and "F 0.3" in win and "+40 samples" in win
    assert deciding_point([(0.6, 0.5, worse, "F 0.6")], 0.5, search).endswith(
        "no point is faster")
