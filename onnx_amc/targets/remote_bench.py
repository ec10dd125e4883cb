"""Latency benchmark that runs on the device: self-contained, stdlib + numpy + onnxruntime only.

Why self-contained: the device (a phone under Termux, a Raspberry Pi, a server reached over SSH)
has Python and onnxruntime but not onnx-amc.  :mod:`onnx_amc.targets.ssh` sends this file's
source on the remote ``python3``'s stdin and then a batch of candidate models, so one SSH round
trip measures many candidates.  The pure statistics here (order-statistic CI of the median, the
stopping rule, session options, random inputs) are also what :mod:`onnx_amc.latency` uses
locally, so a remote number and a local number mean the same thing.

Wire format (stdin, after the bootstrap has read this source; no pickle anywhere):

* frames of ``8-byte big-endian length + payload``;
* frame 0 is UTF-8 JSON settings: ``{"count": N, "threads", "providers", "warmup",
  "min_runs", "rel_ci", "time_cap_s", "min_time_s"}``;
* frames 1..N are serialized ONNX models.

Output (stdout): one JSON object per line, each with ``"onnx_amc_bench": PROTOCOL``:

* ``{"type": "device", ...}`` first (:func:`device_info`), or ``{"type": "fatal", ...}`` (no
  numpy or onnxruntime, bad settings, unavailable provider) and exit code 3;
* then per model ``{"type": "result", "index": i, "median_ms", ...}`` or
  ``{"type": "error", "index": i, "message"}``;
* ``{"type": "done"}`` last, so a truncated stream is detected.
"""

from __future__ import annotations

import json
import math
import os
import platform
import struct
import sys
import time

try:  # Missing numpy is reported by main() as a fatal line instead of a traceback.
    import numpy as np
except ImportError:  # pragma: no cover - exercised only on devices without numpy
    np = None  # type: ignore[assignment]

PROTOCOL = 1
FATAL_EXIT = 3
WARMUP_TIME_S = 0.25
# The stopping rule's defaults, one set for host and device: latency.measure and
# measure_interleaved, HostTarget and SshTarget all stop a candidate's timing by the same rule.
WARMUP = 10
MIN_RUNS = 20
REL_CI = 0.02
TIME_CAP_S = 10.0
MIN_TIME_S = 0.5
# Several models are timed in blocks of runs, not one run each in turn: a switch leaves the
# caches holding the other model's weights and activations, so a model timed right after
# another runs slower than alone, which is not what a deployment that runs one model
# repeatedly sees (benchmarks/bench_candidate_cost.py: the interleaved ratio of one
# ResNet-18 candidate read 0.29 one run each in turn, 0.16 in blocks).  Each block starts
# with SETTLE_RUNS untimed runs and lasts about BLOCK_S, short against the seconds over which
# a shared machine's speed drifts, so ratios still cancel the drift.
BLOCK_S = 0.02
MAX_BLOCK_RUNS = 50
SETTLE_RUNS = 2
_EXACT_MAX_N = 300
_FRAME = struct.Struct(">Q")

# ONNX Runtime's type strings -> numpy dtype names (names, so this module imports without numpy).
ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int8)": "int8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(uint8)": "uint8",
    "tensor(uint16)": "uint16",
    "tensor(uint32)": "uint32",
    "tensor(uint64)": "uint64",
    "tensor(bool)": "bool",
}

# What the documentation says about getting XNNPACK, for the error when a build lacks it.
XNNPACK_HINT = (
    "onnxruntime's documentation lists prebuilt XNNPACK only in onnxruntime-android and the iOS "
    "packages; elsewhere build onnxruntime with --use_xnnpack"
)


class BenchInputError(ValueError):
    """A model or setting the benchmark cannot use; the message is one line for the user."""


# ---------------------------------------------------------------------------------------------
# Statistics (pure; shared with onnx_amc.latency)
# ---------------------------------------------------------------------------------------------


def z_quantile(alpha: float) -> float:
    """Two-sided normal quantile via bisection on erfc (no scipy dependency)."""
    lo, hi = 0.0, 10.0
    for _ in range(100):
        mid = (lo + hi) / 2.0
        if math.erfc(mid / math.sqrt(2.0)) > alpha:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2.0


_RANK_CACHE: dict = {}


def binom_ci_rank(n: int, alpha: float = 0.05) -> int:
    """Largest 1-based rank j with P(Bin(n, 1/2) <= j - 1) <= alpha/2, 0 if none.

    Then [x_(j), x_(n+1-j)] covers the median with probability >= 1 - alpha: exact binomial
    (integer arithmetic) for n <= 300, the normal approximation above.
    """
    key = (n, alpha)
    if key in _RANK_CACHE:
        return _RANK_CACHE[key]
    if n <= _EXACT_MAX_N:
        limit = alpha / 2.0 * (1 << n)
        cdf = 0
        j = 0
        for i in range(n):
            cdf += math.comb(n, i)
            if cdf > limit:
                break
            j = i + 1
    else:
        z = 1.959963984540054 if alpha == 0.05 else z_quantile(alpha)
        j = max(0, int(math.floor(n / 2.0 - z * math.sqrt(n) / 2.0)))
    if len(_RANK_CACHE) < 8192:
        _RANK_CACHE[key] = j
    return j


def median_ci(samples, alpha: float = 0.05) -> tuple[float, float]:
    """Distribution-free (order statistic) ``1 - alpha`` CI of the median.

    Returns ``(-inf, inf)`` when there are too few samples (n < 6 for 95 %).
    """
    x = np.sort(np.asarray(samples, dtype=np.float64))
    n = x.size
    j = binom_ci_rank(n, alpha) if n else 0
    if j < 1:
        return -math.inf, math.inf
    return float(x[j - 1]), float(x[n - j])


def rel_half_width(samples) -> float:
    """Half-width of the median's 95 % CI over the median (``inf`` without a CI)."""
    lo, hi = median_ci(samples)
    med = float(np.median(samples))
    if not math.isfinite(lo) or med <= 0:
        return math.inf
    return (hi - lo) / 2.0 / med


def summarise(times_ns, threads: int, rel: float, capped: bool) -> dict:
    """The fields of ``onnx_amc.latency.LatencyStats`` (milliseconds) from raw timings."""
    ms = np.asarray(times_ns, dtype=np.float64) / 1e6
    q1, med, q3 = np.percentile(ms, [25, 50, 75])
    return {
        "median_ms": float(med),
        "iqr_ms": float(q3 - q1),
        "mean_ms": float(ms.mean()),
        "runs": int(ms.size),
        "threads": int(threads),
        "ci95_rel": float(rel),
        "capped": bool(capped),
    }


def time_round_robin(
    runs,
    feeds,
    *,
    warmup: int,
    min_runs: int,
    rel_ci: float,
    time_cap_s: float,
    min_time_s: float,
):
    """Time ``runs`` (``session.run`` callables) in turn until all medians are tight: one
    model alone run after run; several in blocks of about ``BLOCK_S`` each, the first
    ``SETTLE_RUNS`` of a block untimed (see ``BLOCK_S``).

    Returns ``(times_ns per run, rel half-widths, capped)``.  The stopping rule is documented
    in :mod:`onnx_amc.latency`.

    Raises:
        ValueError: ``min_runs < 1`` or ``warmup < 0``.
    """
    if min_runs < 1 or warmup < 0:
        raise ValueError(f"need min_runs >= 1 and warmup >= 0, got {min_runs}, {warmup}")
    pairs = list(zip(runs, feeds))  # noqa: B905 - py3.8 devices have no strict=
    if len(pairs) != len(runs) or len(pairs) != len(feeds):
        raise ValueError("one feed dict per session is needed")
    perf, perf_ns = time.perf_counter, time.perf_counter_ns
    start = perf()
    done = 0
    # At least `warmup` runs and WARMUP_TIME_S: ten runs of a 0.5 ms model leave thread pools,
    # allocator and CPU clocks cold, and the first measurement then reads ~1.8x slow.
    while done < warmup or perf() - start < WARMUP_TIME_S:
        for run, feed in pairs:
            run(None, feed)
        done += 1

    settle, blocks = 0, [1] * len(pairs)
    if len(pairs) > 1:
        settle = SETTLE_RUNS
        blocks = []
        for run, feed in pairs:
            t0 = perf()
            run(None, feed)
            blocks.append(max(1, min(MAX_BLOCK_RUNS, int(BLOCK_S / max(perf() - t0, 1e-6)))))
    timed_start = perf()
    times_ns = [[] for _ in pairs]
    rels = [math.inf] * len(pairs)
    next_check = min_runs
    n = 0
    while True:
        for k, (run, feed) in enumerate(pairs):
            for _ in range(settle):
                run(None, feed)
            for _ in range(blocks[k]):
                t0 = perf_ns()
                run(None, feed)
                times_ns[k].append(perf_ns() - t0)
        n = min(len(t) for t in times_ns)
        if n < next_check:
            continue
        # Checking costs a sort; do it on a geometric-ish schedule (every ~5 %).
        next_check = n + max(1, n // 20)
        rels = [rel_half_width(np.asarray(t, dtype=np.float64)) for t in times_ns]
        worst = max(rels)
        if worst <= rel_ci and perf() - timed_start >= min_time_s:
            return times_ns, rels, False
        if perf() - start >= time_cap_s:
            # A cap below min_time_s alone is not a precision miss.
            return times_ns, rels, worst > rel_ci


# ---------------------------------------------------------------------------------------------
# Sessions, providers, inputs (take the onnxruntime module as an argument)
# ---------------------------------------------------------------------------------------------


def _short(name: str) -> str:
    low = name.lower()
    return low[: -len("executionprovider")] if low.endswith("executionprovider") else low


def resolve_providers(requested, available, version: str = "") -> list[str]:
    """Canonical provider names for ``requested`` (case-insensitive, suffix optional).

    ``"xnnpack"``, ``"Xnnpack"`` and ``"XnnpackExecutionProvider"`` all name the same provider.
    ``CPUExecutionProvider`` is appended as the fallback for operators another provider lacks
    (ONNX Runtime would add it anyway; listing it keeps the session's provider list honest).
    ``None`` or empty means CPU only.

    Raises:
        BenchInputError: a name not in ``available`` (the message lists what is available).
    """
    available = list(available)
    if not requested:
        requested = ["CPUExecutionProvider"]
    by_short = {_short(a): a for a in available}
    out: list[str] = []
    for name in requested:
        canonical = by_short.get(_short(str(name).strip()))
        if canonical is None:
            shown = ", ".join(available) or "none"
            hint = f"; {XNNPACK_HINT}" if _short(str(name)) == "xnnpack" else ""
            raise BenchInputError(
                f"execution provider '{name}' is not available in this onnxruntime "
                f"{version + ' ' if version else ''}build "
                f"(available: {shown}){hint}"
            )
        if canonical not in out:
            out.append(canonical)
    if "CPUExecutionProvider" in available and "CPUExecutionProvider" not in out:
        out.append("CPUExecutionProvider")
    return out


def session_options(ort, threads: int, providers, spinning: bool = True) -> tuple:
    """``(SessionOptions, providers, provider_options)`` for timing, documented in latency.py.

    With XNNPACK first, XNNPACK gets the ``threads`` and ORT's own intra-op pool gets one
    thread without spinning, as ONNX Runtime's XNNPACK page recommends: two pools on the same
    cores otherwise contend.  ``spinning=False`` turns spinning off for ORT's pool too: for
    several multi-threaded sessions timed in turn, where each pool would otherwise keep
    spinning on the cores the next session runs on.

    Raises:
        ValueError: ``threads < 1``.
    """
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    providers = list(providers)
    xnnpack_first = bool(providers) and _short(providers[0]) == "xnnpack"
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1 if xnnpack_first else threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    provider_options = [{} for _ in providers]
    if xnnpack_first or not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if xnnpack_first:
        provider_options[0] = {"intra_op_num_threads": str(threads)}
    return opts, providers, provider_options


def input_specs(args, pinned=None) -> list[tuple[str, list[int], str]]:
    """``(name, shape, dtype name)`` per session input, batch 1.

    ``pinned`` maps input names to the shapes the caller measures on its own side (the
    calibration data's): they fill dynamic axes, so a model with symbolic H and W is timed
    at the user's size. Otherwise a dynamic leading axis becomes 1 and other dynamic axes are
    refused, because a guessed spatial size would time a different workload than the user's.

    Raises:
        BenchInputError: a dynamic non-leading dimension nothing pins, a pinned shape that
            contradicts a static one, or an unsupported input type.
    """
    pinned = pinned or {}
    specs = []
    for arg in args:
        dtype = ORT_TYPES.get(arg.type)
        if dtype is None:
            raise BenchInputError(f"model input '{arg.name}' has unsupported type {arg.type}")
        want = pinned.get(arg.name)
        if want is not None:
            want = [int(d) for d in want]
            if len(want) != len(arg.shape) or any(
                isinstance(d, int) and d > 0 and d != w for d, w in zip(arg.shape, want)  # noqa: B905
            ):
                raise BenchInputError(
                    f"model input '{arg.name}' has shape {list(arg.shape)}, "
                    f"not the pinned {want}"
                )
            specs.append((arg.name, want, dtype))
            continue
        shape: list[int] = []
        for axis, dim in enumerate(arg.shape):
            if isinstance(dim, int) and dim > 0:
                shape.append(dim)
            elif axis == 0:
                shape.append(1)
            else:
                raise BenchInputError(
                    f"model input '{arg.name}' has dynamic dimension {axis} ({dim!r}); "
                    "provide example inputs to measure latency"
                )
        specs.append((arg.name, shape, dtype))
    return specs


def random_feeds(specs, seed: int = 0) -> dict:
    """Feeds for :func:`input_specs`: floats standard normal, integers and bools zero.

    Timing is value-independent, but zeros could hit special-cased float paths; zero is the
    only integer guaranteed valid as an index.
    """
    rng = np.random.default_rng(seed)
    feeds = {}
    for name, shape, dtype_name in specs:
        dtype = np.dtype(dtype_name)
        if dtype.kind == "f":
            feeds[name] = rng.standard_normal(shape).astype(dtype)
        else:
            feeds[name] = np.zeros(shape, dtype=dtype)
    return feeds


# ---------------------------------------------------------------------------------------------
# Device description
# ---------------------------------------------------------------------------------------------


def cpu_model() -> str:
    """CPU name from /proc/cpuinfo (x86 ``model name``; ARM ``Hardware``/part ids), else platform."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, sep, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if sep and value and key not in fields:
                    fields[key] = value
    except OSError:
        pass
    for key in ("model name", "Hardware", "Processor", "cpu model", "cpu"):
        if key in fields:
            return fields[key]
    if "CPU part" in fields:
        return f"CPU implementer {fields.get('CPU implementer', '?')} part {fields['CPU part']}"
    return platform.processor() or platform.machine() or "unknown"


def _usable_cores() -> int | None:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


def device_info(ort=None) -> dict:
    """What the numbers were measured on; identical keys on the host and on a remote device."""
    info = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": _usable_cores(),
        "machine": platform.machine(),
        "platform": platform.platform(),
        "hostname": platform.node(),
        "python": platform.python_version(),
        "numpy": getattr(np, "__version__", None),
        "onnxruntime": None,
        "providers": [],
    }
    if ort is not None:
        info["onnxruntime"] = ort.__version__
        info["providers"] = list(ort.get_available_providers())
    return info


# ---------------------------------------------------------------------------------------------
# Wire format and the remote main
# ---------------------------------------------------------------------------------------------

SETTINGS_DEFAULTS = {
    "count": 0,
    "threads": 1,
    "providers": None,
    "warmup": 10,
    "min_runs": 20,
    "rel_ci": 0.02,
    "time_cap_s": 10.0,
    "min_time_s": 0.5,
    "input_shapes": None,  # {input name: [dims]} for dynamic axes (see input_specs)
}


def encode_batch(settings: dict, models) -> bytes:
    """Frames for :func:`main`: settings JSON (``count`` filled in), then each model."""
    models = [bytes(m) for m in models]
    body = dict(settings, count=len(models))
    parts = [json.dumps(body).encode("utf-8"), *models]
    return b"".join(_FRAME.pack(len(p)) + p for p in parts)


def read_frame(stream) -> bytes:
    """One length-prefixed frame.

    Raises:
        EOFError: the stream ended inside a frame.
    """
    head = stream.read(_FRAME.size)
    if len(head) != _FRAME.size:
        raise EOFError("input ended before a frame header")
    (size,) = _FRAME.unpack(head)
    payload = stream.read(size)
    if len(payload) != size:
        raise EOFError(f"input ended inside a frame ({len(payload)} of {size} bytes)")
    return payload


def _emit(out, kind: str, **fields) -> None:
    out.write(json.dumps({"onnx_amc_bench": PROTOCOL, "type": kind, **fields}) + "\n")
    out.flush()


def _fatal(out, message: str, **fields) -> int:
    _emit(out, "fatal", message=" ".join(str(message).split()), **fields)
    return FATAL_EXIT


def _settings(raw: bytes) -> dict:
    try:
        got = json.loads(raw.decode("utf-8"))
    except ValueError as exc:
        raise BenchInputError(f"settings are not JSON: {exc}") from None
    if not isinstance(got, dict):
        raise BenchInputError("settings must be a JSON object")
    unknown = sorted(set(got) - set(SETTINGS_DEFAULTS))
    if unknown:
        raise BenchInputError(f"unknown settings {unknown}")
    shapes = got.get("input_shapes")
    if shapes is not None and not (
        isinstance(shapes, dict)
        and all(
            isinstance(v, list) and all(isinstance(d, int) and d > 0 for d in v)
            for v in shapes.values()
        )
    ):
        raise BenchInputError("input_shapes must map input names to lists of positive ints")
    return dict(SETTINGS_DEFAULTS, **got)


def measure_one(ort, model: bytes, settings: dict, providers) -> dict:
    """Time one serialized model per ``settings`` (the method of ``onnx_amc.latency.measure``)."""
    opts, names, provider_options = session_options(ort, int(settings["threads"]), providers)
    session = ort.InferenceSession(
        model, sess_options=opts, providers=names, provider_options=provider_options
    )
    feeds = random_feeds(input_specs(session.get_inputs(), settings.get("input_shapes")))
    times_ns, rels, capped = time_round_robin(
        [session.run],
        [feeds],
        warmup=int(settings["warmup"]),
        min_runs=int(settings["min_runs"]),
        rel_ci=float(settings["rel_ci"]),
        time_cap_s=float(settings["time_cap_s"]),
        min_time_s=float(settings["min_time_s"]),
    )
    return summarise(times_ns[0], int(settings["threads"]), rels[0], capped)


def main(stdin=None, stdout=None) -> int:
    """Read one batch from ``stdin`` (binary), write JSON lines to ``stdout`` (text)."""
    stdin = stdin if stdin is not None else sys.stdin.buffer
    out = stdout if stdout is not None else sys.stdout
    try:
        import onnxruntime as ort
    except ImportError:
        ort = None
    missing = [name for name, mod in (("onnxruntime", ort), ("numpy", np)) if mod is None]
    if missing:
        return _fatal(
            out,
            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing "
            f"(python {platform.python_version()} at {sys.executable})",
            missing=missing,
        )
    try:
        settings = _settings(read_frame(stdin))
        providers = resolve_providers(
            settings["providers"], ort.get_available_providers(), ort.__version__
        )
    except (BenchInputError, EOFError) as exc:
        return _fatal(out, str(exc))
    _emit(out, "device", **device_info(ort), used_providers=providers)
    for index in range(int(settings["count"])):
        try:
            model = read_frame(stdin)
        except EOFError as exc:
            return _fatal(out, f"model {index}: {exc}")
        try:
            stats = measure_one(ort, model, settings, providers)
        except Exception as exc:  # one bad candidate must not lose the batch
            _emit(out, "error", index=index, message=f"{type(exc).__name__}: {exc}")
        else:
            _emit(out, "result", index=index, **stats)
    _emit(out, "done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
