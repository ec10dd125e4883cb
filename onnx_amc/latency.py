"""Latency measurement with onnxruntime on CPU, with a stopping rule based on precision.

AMC's reward under a latency budget is only as good as the latency numbers, and
single-shot timings on a shared CPU are noisy.  :func:`measure` therefore repeats the
run until the 95 % confidence interval of the *median* is tight (``rel_ci``) or a time
cap is reached, and reports how tight it got.

Session options (:func:`make_session`)
--------------------------------------
* ``intra_op_num_threads = threads`` -- fixed, because ORT's default (all cores)
  makes numbers depend on the machine's load and core count;
* ``inter_op_num_threads = 1`` and ``execution_mode = ORT_SEQUENTIAL`` -- CNNs gain
  nothing from parallel branches and it adds variance;
* ``graph_optimization_level = ORT_ENABLE_ALL`` -- we time what a deployment would
  run (fused Conv+BN+ReLU etc.), not the raw graph;
* ``log_severity_level = 3`` -- errors only, so pruning sweeps do not flood stderr;
* everything else (memory arena, thread spinning) at ORT defaults.

Sessions are created from serialized bytes: far cheaper than writing candidates to disk.

Stopping rule
-------------
After ``warmup`` untimed runs (and at least ``WARMUP_TIME_S`` of them), runs are timed one at a time with ``perf_counter_ns``
(wall time of ``session.run`` including input/output copies).  Once ``min_runs``
timings exist, the distribution-free CI of the median is computed from order
statistics (exact binomial for n <= 300, normal approximation above) and measuring
stops when its half-width / median <= ``rel_ci`` and at least ``min_time_s`` of timed
runs have elapsed, or when the time since the first
warm-up run exceeds ``time_cap_s`` (then ``capped=True``).  ``warmup`` and ``min_runs``
are always honoured, even past the cap.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from onnx_amc.errors import InputError

__all__ = [
    "LatencyStats",
    "make_session",
    "measure",
    "measure_interleaved",
    "median_ci",
    "random_inputs",
]

logger = logging.getLogger(__name__)

_ORT_TYPES: dict[str, np.dtype] = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(double)": np.dtype(np.float64),
    "tensor(int8)": np.dtype(np.int8),
    "tensor(int16)": np.dtype(np.int16),
    "tensor(int32)": np.dtype(np.int32),
    "tensor(int64)": np.dtype(np.int64),
    "tensor(uint8)": np.dtype(np.uint8),
    "tensor(uint16)": np.dtype(np.uint16),
    "tensor(uint32)": np.dtype(np.uint32),
    "tensor(uint64)": np.dtype(np.uint64),
    "tensor(bool)": np.dtype(np.bool_),
}

_EXACT_MAX_N = 300
WARMUP_TIME_S = 0.25


@dataclass(frozen=True)
class LatencyStats:
    """Summary of one :func:`measure` call (times in milliseconds).

    ``ci95_rel`` is the half-width of the 95 % CI of the median divided by the median
    (``inf`` if too few runs for a CI); ``capped`` says the time cap stopped measuring
    before ``ci95_rel`` reached the requested precision.
    """

    median_ms: float
    iqr_ms: float
    mean_ms: float
    runs: int
    threads: int
    ci95_rel: float
    capped: bool

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


def make_session(
    model_bytes: bytes | onnx.ModelProto,
    threads: int = 1,
    providers: Sequence[str] = ("CPUExecutionProvider",),
) -> ort.InferenceSession:
    """Create an inference session from serialized model bytes with the module's options.

    Raises:
        ValueError: ``threads < 1``.
    """
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if isinstance(model_bytes, onnx.ModelProto):
        model_bytes = model_bytes.SerializeToString()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(model_bytes, sess_options=opts, providers=list(providers))


def random_inputs(session: ort.InferenceSession, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs matching the session's declared inputs, batch 1.

    Floats are standard normal (timing is value-independent, but zeros could hit
    special-cased paths); integers and bools are zeros, the only values guaranteed
    valid as indices.  A dynamic leading axis becomes 1.

    Raises:
        InputError: a dynamic non-leading dimension or unsupported input type.
    """
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for arg in session.get_inputs():
        dtype = _ORT_TYPES.get(arg.type)
        if dtype is None:
            raise InputError(f"model input '{arg.name}' has unsupported type {arg.type}")
        shape: list[int] = []
        for axis, dim in enumerate(arg.shape):
            if isinstance(dim, int) and dim > 0:
                shape.append(dim)
            elif axis == 0:
                shape.append(1)
            else:
                raise InputError(
                    f"model input '{arg.name}' has dynamic dimension {axis} ({dim!r}); "
                    "provide example inputs to measure latency"
                )
        if dtype.kind == "f":
            feeds[arg.name] = rng.standard_normal(shape).astype(dtype)
        else:
            feeds[arg.name] = np.zeros(shape, dtype=dtype)
    return feeds


@functools.lru_cache(maxsize=4096)
def _binom_ci_rank(n: int, alpha: float = 0.05) -> int:
    """Largest 1-based rank j with P(Bin(n, 1/2) <= j - 1) <= alpha/2, 0 if none.

    Then [x_(j), x_(n+1-j)] covers the median with probability >= 1 - alpha.
    """
    if n <= _EXACT_MAX_N:
        # Exact integer arithmetic: compare sum(C(n, i)) / 2^n with alpha/2.
        total = 1 << n
        limit = alpha / 2.0 * total
        cdf = 0
        j = 0
        for i in range(n):
            cdf += math.comb(n, i)
            if cdf > limit:
                break
            j = i + 1
        return j
    z = 1.959963984540054 if alpha == 0.05 else _z(alpha)
    return max(0, int(math.floor(n / 2.0 - z * math.sqrt(n) / 2.0)))


def _z(alpha: float) -> float:
    """Two-sided normal quantile via bisection on erf (no scipy dependency)."""
    lo, hi = 0.0, 10.0
    for _ in range(100):
        mid = (lo + hi) / 2.0
        if math.erfc(mid / math.sqrt(2.0)) > alpha:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2.0


def median_ci(samples: Sequence[float] | np.ndarray, alpha: float = 0.05) -> tuple[float, float]:
    """Distribution-free (order statistic) ``1 - alpha`` CI of the median.

    Returns ``(-inf, inf)`` when there are too few samples (n < 6 for 95 %).
    """
    x = np.sort(np.asarray(samples, dtype=np.float64))
    n = x.size
    j = _binom_ci_rank(n, alpha) if n else 0
    if j < 1:
        return -math.inf, math.inf
    return float(x[j - 1]), float(x[n - j])


def _rel_half_width(samples: np.ndarray) -> float:
    lo, hi = median_ci(samples)
    med = float(np.median(samples))
    if not math.isfinite(lo) or med <= 0:
        return math.inf
    return (hi - lo) / 2.0 / med


def _as_session(
    model: bytes | onnx.ModelProto | ort.InferenceSession,
    threads: int,
    providers: Sequence[str],
) -> tuple[ort.InferenceSession, int]:
    if isinstance(model, ort.InferenceSession):
        return model, int(model.get_session_options().intra_op_num_threads) or threads
    return make_session(model, threads, providers), threads


def _summarise(times_ns: list[int], threads: int, rel: float, capped: bool) -> LatencyStats:
    ms = np.asarray(times_ns, dtype=np.float64) / 1e6
    q1, med, q3 = np.percentile(ms, [25, 50, 75])
    return LatencyStats(
        median_ms=float(med),
        iqr_ms=float(q3 - q1),
        mean_ms=float(ms.mean()),
        runs=int(ms.size),
        threads=int(threads),
        ci95_rel=float(rel),
        capped=capped,
    )


def _time_round_robin(
    sessions: Sequence[ort.InferenceSession],
    feeds: Sequence[dict[str, np.ndarray]],
    *,
    warmup: int,
    min_runs: int,
    rel_ci: float,
    time_cap_s: float,
    min_time_s: float,
) -> tuple[list[list[int]], list[float], bool]:
    """Time ``sessions`` one run each in turn until all medians are precise enough."""
    if min_runs < 1 or warmup < 0:
        raise ValueError(f"need min_runs >= 1 and warmup >= 0, got {min_runs}, {warmup}")
    runs = [s.run for s in sessions]
    start = time.perf_counter()
    done = 0
    # At least `warmup` runs and WARMUP_TIME_S: ten runs of a 0.5 ms model leave thread pools,
    # allocator and CPU clocks cold, and the first measurement then reads ~1.8x slow.
    while done < warmup or time.perf_counter() - start < WARMUP_TIME_S:
        for run, feed in zip(runs, feeds, strict=True):
            run(None, feed)
        done += 1

    timed_start = time.perf_counter()
    times_ns: list[list[int]] = [[] for _ in sessions]
    rels = [math.inf] * len(sessions)
    next_check = min_runs
    n = 0
    while True:
        for run, feed, bucket in zip(runs, feeds, times_ns, strict=True):
            t0 = time.perf_counter_ns()
            run(None, feed)
            bucket.append(time.perf_counter_ns() - t0)
        n += 1
        if n < next_check:
            continue
        # Checking costs a sort; do it on a geometric-ish schedule (every ~5 %).
        next_check = n + max(1, n // 20)
        rels = [_rel_half_width(np.asarray(t, dtype=np.float64)) for t in times_ns]
        worst = max(rels)
        if worst <= rel_ci and time.perf_counter() - timed_start >= min_time_s:
            return times_ns, rels, False
        if time.perf_counter() - start >= time_cap_s:
            # A cap below min_time_s alone is not a precision miss.
            return times_ns, rels, worst > rel_ci


def measure(
    model: bytes | onnx.ModelProto | ort.InferenceSession,
    inputs: Mapping[str, np.ndarray] | None = None,
    *,
    threads: int = 1,
    warmup: int = 10,
    min_runs: int = 20,
    rel_ci: float = 0.02,
    time_cap_s: float = 10.0,
    min_time_s: float = 0.5,
    providers: Sequence[str] = ("CPUExecutionProvider",),
) -> LatencyStats:
    """Median latency of one inference, measured to a requested precision.

    Args:
        model: serialized bytes, a ModelProto, or a ready session (then ``threads`` and
            ``providers`` are ignored and the session's own thread count is reported).
        inputs: feeds for ``session.run``; ``None`` draws random batch-1 inputs of the
            model's static shapes (see :func:`random_inputs`).
        threads: intra-op threads.
        warmup: untimed runs first (allocations, kernel selection, caches).
        min_runs: timed runs always done, and the minimum before the stopping rule.
        rel_ci: stop once the 95 % CI half-width of the median is <= this fraction of it.
        time_cap_s: stop (``capped=True``) once this much time has elapsed since warm-up
            started and ``min_runs`` are done.
        min_time_s: keep timing at least this long even once the CI is tight.  The CI
            assumes independent runs, but CPU contention and frequency changes drift on
            the scale of 0.1-1 s; a short burst of runs can be precisely measured yet
            unrepresentative, so measurements are spread over a minimum window.
        providers: onnxruntime execution providers.

    Raises:
        InputError: dynamic input dims without ``inputs``.
        ValueError: invalid ``threads``/``min_runs``/``warmup``.
    """
    (stats,) = measure_interleaved(
        [model],
        inputs,
        threads=threads,
        warmup=warmup,
        min_runs=min_runs,
        rel_ci=rel_ci,
        time_cap_s=time_cap_s,
        min_time_s=min_time_s,
        providers=providers,
    )
    return stats


def measure_interleaved(
    models: Sequence[bytes | onnx.ModelProto | ort.InferenceSession],
    inputs: Mapping[str, np.ndarray] | None = None,
    *,
    threads: int = 1,
    warmup: int = 10,
    min_runs: int = 20,
    rel_ci: float = 0.02,
    time_cap_s: float = 10.0,
    min_time_s: float = 0.5,
    providers: Sequence[str] = ("CPUExecutionProvider",),
) -> list[LatencyStats]:
    """Like :func:`measure` for several models, alternating one run of each in turn.

    Use this for *ratios* (candidate vs. original): machine load drifts on a scale of
    seconds, and interleaving exposes every model to the same drift, so the ratio of
    medians is far more repeatable than the ratio of two separate :func:`measure`
    calls.  Stops when every model's median CI is within ``rel_ci`` (or at the cap;
    ``capped`` is then set on all returned stats).  ``inputs`` are shared by all
    models; ``None`` draws random inputs per model with the same seed.
    """
    if not models:
        raise ValueError("no models to measure")
    pairs = [_as_session(m, threads, providers) for m in models]
    sessions = [s for s, _ in pairs]
    feeds = [dict(inputs) if inputs is not None else random_inputs(s) for s in sessions]
    times_ns, rels, capped = _time_round_robin(
        sessions,
        feeds,
        warmup=warmup,
        min_runs=min_runs,
        rel_ci=rel_ci,
        time_cap_s=time_cap_s,
        min_time_s=min_time_s,
    )
    stats = [
        _summarise(t, th, r, capped) for t, (_, th), r in zip(times_ns, pairs, rels, strict=True)
    ]
    if capped:
        logger.warning(
            "latency hit the %.1fs cap after %d runs: worst median CI +/- %.1f%% (wanted %.1f%%)",
            time_cap_s,
            stats[0].runs,
            100 * max(rels),
            100 * rel_ci,
        )
    else:
        logger.debug("latency %s", stats)
    return stats
