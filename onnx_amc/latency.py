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
* everything else (memory arena, thread spinning) at ORT defaults, except that several
  multi-threaded sessions timed in turn (:func:`measure_interleaved`) do not spin;
* execution providers (``--ep``): CPU unless asked; names are validated against
  ``onnxruntime.get_available_providers()`` (:func:`resolve_providers`).  With XNNPACK
  first, XNNPACK's own pool gets ``threads`` and ORT's pool one thread without spinning,
  as ONNX Runtime's XNNPACK page recommends.

Sessions are created from serialized bytes: far cheaper than writing candidates to disk.

The statistics, session options and random inputs live in
:mod:`onnx_amc.targets.remote_bench`, a self-contained script that also runs on remote
devices (``--target ssh://...``), so remote and local numbers come from the same code.

Stopping rule
-------------
After ``warmup`` untimed runs (and at least ``WARMUP_TIME_S`` of them), runs are timed one at a
time with ``perf_counter_ns`` (wall time of ``session.run`` including input/output copies;
several models in blocks, see :func:`measure_interleaved`).  Once ``min_runs``
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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from onnx_amc.errors import InputError
from onnx_amc.targets import remote_bench as _rb
from onnx_amc.targets.remote_bench import (
    MIN_RUNS,
    MIN_TIME_S,
    REL_CI,
    TIME_CAP_S,
    WARMUP,
    WARMUP_TIME_S,
    median_ci,
)

__all__ = [
    "WARMUP_TIME_S",
    "LatencyStats",
    "available_providers",
    "make_session",
    "measure",
    "measure_interleaved",
    "relative_timer",
    "median_ci",
    "random_inputs",
    "resolve_providers",
]

logger = logging.getLogger(__name__)


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


@functools.lru_cache(maxsize=64)
def _resolve_cached(requested: tuple[str, ...], available: tuple[str, ...]) -> tuple[str, ...]:
    try:
        return tuple(_rb.resolve_providers(list(requested), available, ort.__version__))
    except _rb.BenchInputError as exc:
        raise InputError(f"--ep: {exc}") from None


def available_providers() -> list[str]:
    """Execution providers this onnxruntime build can run (``--ep`` accepts these)."""
    return list(ort.get_available_providers())


def resolve_providers(providers: Sequence[str] | str | None = None) -> tuple[str, ...]:
    """Canonical, validated provider list for ``--ep`` (``None``: CPU only).

    Names are case-insensitive and the ``ExecutionProvider`` suffix is optional
    (``xnnpack`` -> ``XnnpackExecutionProvider``); ``CPUExecutionProvider`` is appended as
    the fallback for operators the chosen provider lacks.  A comma-separated string is
    split, so the CLI can pass ``--ep xnnpack,cpu`` through unchanged.

    Raises:
        InputError: a provider this build does not have; the message lists those it has
            (and, for XNNPACK, where to get a build with it).
    """
    if isinstance(providers, str):
        providers = [p for p in (x.strip() for x in providers.split(",")) if p]
    requested = tuple(providers) if providers else ("CPUExecutionProvider",)
    return _resolve_cached(requested, tuple(ort.get_available_providers()))


def make_session(
    model_bytes: bytes | onnx.ModelProto,
    threads: int = 1,
    providers: Sequence[str] | str | None = None,
    *,
    spinning: bool = True,
) -> ort.InferenceSession:
    """Create an inference session from serialized model bytes with the module's options.

    ``providers`` go through :func:`resolve_providers` (``None``: CPU).

    Raises:
        ValueError: ``threads < 1``.
        InputError: an execution provider this onnxruntime build does not have.
    """
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if isinstance(model_bytes, onnx.ModelProto):
        model_bytes = model_bytes.SerializeToString()
    opts, names, provider_options = _rb.session_options(ort, threads, resolve_providers(providers),
                                                        spinning)
    return ort.InferenceSession(
        model_bytes, sess_options=opts, providers=names, provider_options=provider_options
    )


def random_inputs(session: ort.InferenceSession, seed: int = 0,
                  pinned: Mapping[str, Sequence[int]] | None = None) -> dict[str, np.ndarray]:
    """Random inputs matching the session's declared inputs, batch 1.

    Floats are standard normal (timing is value-independent, but zeros could hit
    special-cased paths); integers and bools are zeros, the only values guaranteed
    valid as indices.  A dynamic leading axis becomes 1; ``pinned`` shapes fill dynamic
    axes (see :func:`onnx_amc.targets.remote_bench.input_specs`).

    Raises:
        InputError: a dynamic non-leading dimension nothing pins, a pinned shape that
            contradicts a static one, or an unsupported input type.
    """
    try:
        specs = _rb.input_specs(session.get_inputs(), pinned)
    except _rb.BenchInputError as exc:
        raise InputError(str(exc)) from None
    return _rb.random_feeds(specs, seed)


def _as_session(
    model: bytes | onnx.ModelProto | ort.InferenceSession,
    threads: int,
    providers: Sequence[str] | str | None,
    spinning: bool = True,
) -> tuple[ort.InferenceSession, int]:
    if isinstance(model, ort.InferenceSession):
        return model, int(model.get_session_options().intra_op_num_threads) or threads
    return make_session(model, threads, providers, spinning=spinning), threads


def _summarise(times_ns: list[int], threads: int, rel: float, capped: bool) -> LatencyStats:
    return LatencyStats(**_rb.summarise(times_ns, threads, rel, capped))


def measure(
    model: bytes | onnx.ModelProto | ort.InferenceSession,
    inputs: Mapping[str, np.ndarray] | None = None,
    *,
    threads: int = 1,
    warmup: int = WARMUP,
    min_runs: int = MIN_RUNS,
    rel_ci: float = REL_CI,
    time_cap_s: float = TIME_CAP_S,
    min_time_s: float = MIN_TIME_S,
    providers: Sequence[str] | str | None = None,
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
        providers: onnxruntime execution providers (``--ep``), validated by
            :func:`resolve_providers`; ``None`` is CPU.

    Raises:
        InputError: dynamic input dims without ``inputs``; an unavailable provider.
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
    warmup: int = WARMUP,
    min_runs: int = MIN_RUNS,
    rel_ci: float = REL_CI,
    time_cap_s: float = TIME_CAP_S,
    min_time_s: float = MIN_TIME_S,
    providers: Sequence[str] | str | None = None,
) -> list[LatencyStats]:
    """Like :func:`measure` for several models, alternating short blocks of runs of each.

    Use this for *ratios* (candidate vs. original): machine load drifts on a scale of
    seconds, and interleaving exposes every model to the same drift, so the ratio of
    medians is far more repeatable than the ratio of two separate :func:`measure`
    calls.  Blocks of about 20 ms, each after two untimed runs, not one run each in turn:
    right after a switch a model runs from caches that hold the other one, slower than alone
    (see ``remote_bench.BLOCK_S``); until 2026-11-30 runs alternated one by one.  Stops when
    every model's median CI is within ``rel_ci`` (or at the cap; ``capped`` is then set on
    all returned stats).  ``inputs`` are shared by all
    models; ``None`` draws random inputs per model with the same seed.
    """
    if not models:
        raise ValueError("no models to measure")
    # Several pools of more than one thread: no spinning, or an idle pool spins on the cores
    # the next session needs (benchmarks/bench_latency_rounding.py before this: ResNet-50 @
    # 224 at keep 0.5 read 28.62 ms on 2 threads against 24.65 ms on 1; now 5.42 / 9.22 ms).
    spinning = threads == 1 or len(models) == 1
    pairs = [_as_session(m, threads, providers, spinning) for m in models]
    sessions = [s for s, _ in pairs]
    feeds = [dict(inputs) if inputs is not None else random_inputs(s) for s in sessions]
    times_ns, rels, capped = _rb.time_round_robin(
        [s.run for s in sessions],
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


def relative_timer(
    original: bytes | onnx.ModelProto,
    inputs: Mapping[str, np.ndarray],
    *,
    threads: int = 1,
    providers: Sequence[str] | str | None = None,
) -> Callable[[bytes | onnx.ModelProto | None], float]:
    """``timer(candidate) -> ms`` for a search whose budget is a fraction of ``original``.

    ``timer(None)`` is the original's median, measured on the first call and kept: the unit
    that the budget and every candidate share.  A candidate runs interleaved with the
    original (:func:`measure_interleaved`), and its result is its fraction of the original
    times that unit.  Why: a shared machine's speed drifts between two separate measurements
    by more than the 2% each is precise to, while the interleaved fraction repeats closely
    (``benchmarks/bench_candidate_cost.py`` reports both).  One session of the original
    serves every call.

    Only with one thread: with more, each session keeps its own intra-op pool whose threads
    spin after a run, so two interleaved sessions time each other's spinning (the original
    read several times slower than alone on this project's VM); candidates are then measured
    alone, like the unit.
    """
    session = make_session(original, threads, providers)
    feeds = dict(inputs)
    unit: list[float] = []

    def timer(candidate: bytes | onnx.ModelProto | None) -> float:
        if not unit:
            unit.append(float(measure(session, feeds).median_ms))
        if candidate is None:
            return unit[0]
        data = candidate.SerializeToString() if isinstance(candidate, onnx.ModelProto) \
            else candidate
        if threads > 1:
            return float(measure(data, feeds, threads=threads, providers=providers).median_ms)
        base, cand = measure_interleaved([session, data], feeds, threads=threads,
                                         providers=providers)
        return unit[0] * cand.median_ms / base.median_ms

    return timer
