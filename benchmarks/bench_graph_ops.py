"""Benchmark graph_ops on the test zoo and the packaged models (speed, coverage, MAC counts).

For every zoo model (opset 17, BN folded) and every installed packaged model:

* speed of ``analyze`` and of ``make_plan(uniform 0.5) + apply``, median of N runs, on a
  ModelProto already in memory; and file to file (analyze from the path, which loads it, then
  plan + apply + ``save_model`` to a temp file);
* Torch-Pruning side by side on the zoo models (``MetaPruner`` with
  ``MagnitudeImportance(p=1)``, pruning_ratio 0.5, final classifier/heads ignored): pruner
  construction + ``step()``, median of M fresh model copies;
* coverage: share of MACs in nodes with a prunable side, MACs after uniform keep 0.5 against
  the ideal (every prunable channel halved), and why groups are frozen;
* MAC counting: ``count(a).macs`` against torch's FlopCounterMode (``torch_macs``).

Run from the repository root::

    .venv/bin/python benchmarks/bench_graph_ops.py

Prints Markdown tables and writes them, with the command line, date, CPU and versions, to
``benchmarks/results/bench_graph_ops.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as dt
import gc
import importlib.metadata as md
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # benchmarks are not tests: make `tests.zoo` importable
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import onnx  # noqa: E402

from graph_ops import (  # noqa: E402
    Analysis,
    analyze,
    apply,
    count,
    importance,
    make_plan,
    prunable_mac_share,
    save_model,
    uniform_policy,
)

RESULTS_DIR = Path(__file__).resolve().parent / "results"

# Modules Torch-Pruning must leave alone: the layers whose outputs are the model outputs.
TP_IGNORED: dict[str, list[str]] = {
    "resnet18": ["fc"],
    "resnet50": ["fc"],
    "resnext": ["fc"],
    "mobilenet_v2": ["classifier.1"],
    "mobilenet_v3_small": ["classifier.3"],
    "vgg16_bn": ["classifier.6"],
    "densenet": ["classifier"],
    "yolo": [f"detect.cv{b}.{i}.2" for b in (2, 3) for i in range(3)],
    "unet": ["outc"],
    "shufflenet_v2": ["fc"],
    "efficientnet": ["classifier.1"],
    "mlp_gemm": ["net.4"],
    "mlp_matmul": ["head"],
}


# --------------------------------------------------------------------------------------------
# shared helpers (bench_latency_rounding.py imports these)
# --------------------------------------------------------------------------------------------


def _run(cmd: Sequence[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True,
                              cwd=REPO, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def cpu_model() -> str:
    for line in _run(["lscpu"]).splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "not installed"


def environment(extra_dists: Sequence[str] = ()) -> list[str]:
    """Markdown bullet lines: command, date, CPU, load, versions, git state."""
    commit = _run(["git", "rev-parse", "--short", "HEAD"]).strip() or "unknown"
    # Results files rewritten by earlier benchmarks are not changes to the measured code.
    dirty = bool(_run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                       ":(exclude)benchmarks/results", ":(exclude)benchmarks/RESULTS.md"]
                      ).strip())
    cmd = shlex.join(getattr(sys, "orig_argv", [sys.executable, *sys.argv]))
    dists = ["onnx-amc", "onnx", "onnxruntime", "numpy", "torch", *extra_dists]
    versions = ", ".join(f"{d} {_version(d)}" for d in dists)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        f"- command: `{cmd}` (cwd `{os.getcwd()}`)",
        f"- date: {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}",
        f"- CPU: {cpu_model()}; nproc {os.cpu_count()} "
        f"(usable {len(os.sched_getaffinity(0))}); load average at start {load}",
        f"- Python {platform.python_version()}; {versions}",
        f"- git: {commit}{' + uncommitted changes' if dirty else ''}",
    ]


def md_table(header: Sequence[str], rows: Sequence[Sequence[Any]],
             align: str | None = None) -> str:
    """GitHub Markdown table; ``align`` is one char per column: l or r (default: l then r)."""
    align = align or "l" + "r" * (len(header) - 1)
    sep = ["---" if a == "l" else "--:" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def write_report(script: str, title: str, env: list[str], sections: Sequence[str],
                 elapsed_s: float) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{script}.md"
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    body = [f"# {title}", "", *env, f"- total runtime: {elapsed_s:.0f} s; load average at end "
            f"{load}", "", *[s + "\n" for s in sections]]
    path.write_text("\n".join(body).rstrip() + "\n")
    return path


@contextlib.contextmanager
def timer(out: list[float]) -> Iterator[None]:
    t0 = time.perf_counter()
    yield
    out.append(time.perf_counter() - t0)


def fmt_ms(s: float | None) -> str:
    if s is None:
        return "n/a"
    ms = s * 1e3
    return f"{ms:.1f}" if ms < 100 else f"{ms:.0f}"


def fmt_m(v: float | None) -> str:
    """Millions with 2 decimals (MACs, params)."""
    return "n/a" if v is None else f"{v / 1e6:.2f}"


# --------------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------------


@dataclass
class Item:
    name: str
    kind: str  # "zoo" | "packaged"
    path: Path
    input_shapes: dict[str, tuple[int, ...]]


def collect(only: Sequence[str] | None) -> list[Item]:
    from tests.packaged import available
    from tests.zoo import NAMES, input_shapes, model_path

    items = [Item(n, "zoo", model_path(n, opset=17, bn="folded"), input_shapes(n)) for n in NAMES]
    items += [Item(m.name, "packaged", p, dict(m.input_shapes)) for m, p in available()]
    if only:
        items = [i for i in items if i.name in only]
    return items


# --------------------------------------------------------------------------------------------
# graph_ops timing
# --------------------------------------------------------------------------------------------


@dataclass
class OursResult:
    analyze_s: float
    plan_apply_s: float
    total_s: float
    file_s: float
    nodes: int
    groups: int
    prunable_groups: int
    analysis: Analysis
    keep: np.ndarray = field(repr=False)


def _prune(a: Analysis) -> tuple[np.ndarray, onnx.ModelProto]:
    plan = make_plan(a, uniform_policy(a, 0.5), importance(a, "l1"), round_to=1)
    return plan.keep, apply(a, plan)


def time_ours(item: Item, reps: int, tmpdir: Path) -> Generator[None, None, OursResult]:
    """One repetition per ``next()``; the result is the generator's return value."""
    model = onnx.load(str(item.path))
    t_an: list[float] = []
    t_pa: list[float] = []
    t_tot: list[float] = []
    t_file: list[float] = []
    a: Analysis | None = None
    keep: np.ndarray | None = None
    out = tmpdir / f"{item.name}_pruned.onnx"
    for _ in range(reps):
        _prune(analyze(model, input_shapes=item.input_shapes))  # untimed warm-up call
        gc.collect()
        t0 = time.perf_counter()
        a = analyze(model, input_shapes=item.input_shapes)
        t1 = time.perf_counter()
        keep, pruned = _prune(a)
        t2 = time.perf_counter()
        t_an.append(t1 - t0)
        t_pa.append(t2 - t1)
        t_tot.append(t2 - t0)
        del pruned
        gc.collect()
        with timer(t_file):  # load from disk, analyze, plan, apply, serialize to disk
            af = analyze(item.path, input_shapes=item.input_shapes)
            _, pf = _prune(af)
            save_model(pf, out)
        del af, pf
        yield
    assert a is not None and keep is not None
    return OursResult(
        analyze_s=statistics.median(t_an),
        plan_apply_s=statistics.median(t_pa),
        total_s=statistics.median(t_tot),
        file_s=statistics.median(t_file),
        nodes=len(model.graph.node),
        groups=len(a.groups),
        prunable_groups=len(a.prunable_groups),
        analysis=a,
        keep=keep,
    )


# --------------------------------------------------------------------------------------------
# Torch-Pruning
# --------------------------------------------------------------------------------------------


@dataclass
class TPResult:
    construct_s: float | None = None
    step_s: float | None = None
    total_s: float | None = None
    macs_after: int | None = None
    error: str | None = None


def _short_error(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:90]}{'...' if len(text) > 90 else ''}"


def time_torch_pruning(name: str, reps: int) -> Generator[None, None, TPResult]:
    """One repetition per ``next()``, like ``time_ours``."""
    import torch
    import torch_pruning as tp

    from tests.zoo import input_shapes, torch_model
    from tests.zoo.export import count_macs

    base = torch_model(name)
    example = tuple(torch.randn(s) for s in input_shapes(name).values())
    ex_arg: Any = example[0] if len(example) == 1 else example
    res = TPResult()
    t_c: list[float] = []
    t_s: list[float] = []
    model = base

    def fresh() -> tuple[Any, list[Any]]:
        """A deep copy of the model and its ignored layers (outside the timed call)."""
        copied = copy.deepcopy(base)
        modules = dict(copied.named_modules())
        return copied, [modules[k] for k in TP_IGNORED.get(name, [])]

    def construct(model: Any, ignored: list[Any]) -> Any:  # MetaPruner traces the model
        return tp.pruner.MetaPruner(model, ex_arg,
                                    importance=tp.importance.MagnitudeImportance(p=1),
                                    pruning_ratio=0.5, ignored_layers=ignored)

    for _ in range(reps):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                construct(*fresh()).step()  # untimed warm-up call, as on graph_ops' side
                model, ignored = fresh()
                gc.collect()
                t0 = time.perf_counter()
                pruner = construct(model, ignored)
                t1 = time.perf_counter()
                pruner.step()
                t2 = time.perf_counter()
        except Exception as exc:  # record the failure, keep benchmarking the rest
            res.error = _short_error(exc)
            return res
        t_c.append(t1 - t0)
        t_s.append(t2 - t1)
        yield
    res.construct_s = statistics.median(t_c)
    res.step_s = statistics.median(t_s)
    res.total_s = statistics.median(c + s for c, s in zip(t_c, t_s, strict=True))
    try:
        res.macs_after = count_macs(model, example)  # same counter as torch_macs()
    except Exception as exc:  # pruned model does not run
        res.error = "pruned model fails forward: " + _short_error(exc)
    return res


# --------------------------------------------------------------------------------------------
# coverage
# --------------------------------------------------------------------------------------------


@dataclass
class Coverage:
    macs: int | None
    macs_after: int | None
    ideal: float | None
    share: float | None
    unknown_terms: int
    n_terms: int


def coverage(a: Analysis, keep: np.ndarray) -> Coverage:
    """Ideal = every prunable channel halved: per MAC node, each side's channel count is
    scaled by 1 - 0.5 x (prunable fraction of that side's channels); a depthwise node scales
    with its output side only."""
    prunable_group = np.array([g.prunable for g in a.groups], dtype=bool)

    def factor(layout: np.ndarray | None) -> float:
        if layout is None or layout.size == 0:
            return 1.0
        gi = a.class_group[a.raw_to_class[layout]]
        ok = np.zeros(gi.shape, dtype=bool)
        valid = gi >= 0
        ok[valid] = prunable_group[gi[valid]]
        return 1.0 - 0.5 * float(ok.mean())

    ideal = 0.0
    unknown = 0
    for t in a.mac_terms:
        if t.coef is None:
            unknown += 1
            continue
        if t.depthwise:
            ideal += t.coef * t.n_out * factor(t.out_layout)
        else:
            ideal += (t.coef * t.n_in * t.n_out / t.groups
                      * factor(t.in_layout) * factor(t.out_layout))
    before = count(a).macs
    after = count(a, keep).macs
    return Coverage(
        macs=before,
        macs_after=after,
        ideal=None if unknown else ideal,
        share=prunable_mac_share(a),
        unknown_terms=unknown,
        n_terms=len(a.mac_terms),
    )


def frozen_summary(a: Analysis, limit: int = 4) -> str:
    """Frozen-group reasons with tensor names elided, most frequent first, with channels."""
    reasons: Counter[str] = Counter()
    chans: Counter[str] = Counter()
    for g in a.groups:
        if g.frozen is None:
            continue
        key = re.sub(r"'[^']*'", "'…'", g.frozen)
        reasons[key] += 1
        chans[key] += g.size
    if not reasons:
        return "-"
    parts = [f"{n}x {r} ({chans[r]} ch)" for r, n in reasons.most_common(limit)]
    if len(reasons) > limit:
        parts.append(f"+{len(reasons) - limit} other reasons")
    return "; ".join(parts).replace("|", "\\|")


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------


def interleaved(*runs: Generator[None, None, Any]) -> list[Any]:
    """Alternate the repetitions of several timed runs (ours, Torch-Pruning's) so that both
    sample the same stretches of this VM's speed, which drifts by tens of percent within a
    minute; returns each run's result."""
    results: list[Any] = [None] * len(runs)
    active = dict(enumerate(runs))
    while active:
        for i, run in list(active.items()):
            try:
                next(run)
            except StopIteration as stop:
                results[i] = stop.value
                del active[i]
    return results


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="*", help="only these zoo/packaged model names")
    ap.add_argument("--reps", type=int, default=5, help="graph_ops repetitions (median)")
    ap.add_argument("--tp-reps", type=int, default=3, help="Torch-Pruning repetitions (median)")
    ap.add_argument("--no-tp", action="store_true", help="skip Torch-Pruning")
    args = ap.parse_args(argv)

    start = time.perf_counter()
    env = environment(["torch-pruning"])

    torch_threads = "n/a"
    if not args.no_tp:
        import torch

        # graph_ops is single-threaded numpy; torch gets 1 thread as well (on this 2-vCPU
        # class of machine torch's OpenMP path is slower with 2 at these small sizes).
        torch.set_num_threads(1)
        torch_threads = str(torch.get_num_threads())
        interleaved(time_torch_pruning("mlp_gemm", 1))  # warm-up: torch_pruning's lazy imports

    from tests.zoo import torch_macs

    # Both sides run a gc.collect() before every timed repetition (so no repetition pays for
    # the last one's garbage). With torch imported, that collect walks about a million
    # import-time objects and leaves the CPU caches cold, which tripled a 0.4 ms graph_ops call
    # on the MLPs. Freezing the import-time heap once (CPython's gc.freeze, meant for exactly
    # this) makes each collect walk only the repetitions' own objects, for both sides alike.
    gc.collect()
    gc.freeze()

    items = collect(args.models)
    speed_rows: list[list[Any]] = []
    cov_rows: list[list[Any]] = []
    frozen_rows: list[list[Any]] = []
    tp_errors: list[str] = []
    ratios: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench_graph_ops_") as tmp:
        for item in items:
            log(f"[{time.perf_counter() - start:6.1f}s] {item.kind} {item.name}: graph_ops ...")
            runs: list[Generator[None, None, Any]] = [time_ours(item, args.reps, Path(tmp))]
            if item.kind == "zoo" and not args.no_tp:
                log(f"[{time.perf_counter() - start:6.1f}s] {item.name}: + torch-pruning ...")
                runs.append(time_torch_pruning(item.name, args.tp_reps))
            ours, *tp = interleaved(*runs)
            tp_res: TPResult | None = tp[0] if tp else None
            a = ours.analysis
            cov = coverage(a, ours.keep)

            if tp_res is None:
                tp_cells = ["-", "-", "-"]
            elif tp_res.total_s is None:
                tp_cells = ["failed", "", "n/a"]
                tp_errors.append(f"- {item.name}: `{tp_res.error}`")
            else:
                ratio = tp_res.total_s / ours.total_s
                ratios.append(ratio)
                tp_cells = [fmt_ms(tp_res.construct_s), fmt_ms(tp_res.step_s),
                            f"{ratio:.2f}x"]
                if tp_res.error:
                    tp_errors.append(f"- {item.name}: `{tp_res.error}`")
            speed_rows.append([
                item.name, item.kind, ours.nodes, f"{ours.prunable_groups}/{ours.groups}",
                fmt_ms(ours.analyze_s), fmt_ms(ours.plan_apply_s), fmt_ms(ours.total_s),
                fmt_ms(ours.file_s), *tp_cells,
            ])

            if cov.macs is None or cov.macs_after is None or cov.ideal is None:
                ach = f"n/a ({cov.unknown_terms}/{cov.n_terms} MAC nodes without sizes)"
                share = "n/a"
            else:
                ach = f"{cov.macs_after / cov.ideal:.3f}"
                share = f"{100 * (cov.share or 0.0):.1f}%"
            if item.kind == "zoo":
                ref = torch_macs(item.name)
                err = "n/a" if cov.macs is None else f"{100 * (cov.macs - ref) / ref:+.2f}%"
                ref_s = fmt_m(ref)
            else:
                ref_s, err = "-", "-"
            tp_after = "-"
            if tp_res is not None:
                tp_after = fmt_m(tp_res.macs_after) if tp_res.macs_after is not None else "n/a"
            p0, p1 = count(a).params, count(a, ours.keep).params
            cov_rows.append([
                item.name, fmt_m(cov.macs), ref_s, err, share, fmt_m(cov.macs_after),
                fmt_m(cov.ideal), ach, tp_after, f"{fmt_m(p0)} -> {fmt_m(p1)}",
            ])
            frozen_rows.append([
                item.name, f"{ours.groups - ours.prunable_groups}/{ours.groups}",
                frozen_summary(a),
            ])

    speed = md_table(
        ["model", "set", "nodes", "prunable/groups", "analyze ms", "plan+apply ms",
         "in-memory total ms", "file->file ms", "TP construct ms", "TP step ms",
         "TP total / ours"],
        speed_rows)
    cov_table = md_table(
        ["model", "MACs M (ours)", "MACs M (torch)", "MAC count err", "prunable MAC share",
         "MACs M after keep 0.5", "ideal M", "achieved / ideal", "TP MACs M after 0.5",
         "params M before -> after"],
        cov_rows)
    frozen_table = md_table(["model", "frozen/groups", "why frozen (count x reason)"],
                            frozen_rows, "lrl")
    geo = float(np.exp(np.mean(np.log(ratios)))) if ratios else None
    notes = [
        f"graph_ops: median of {args.reps}; in-memory = analyze(ModelProto) + "
        "make_plan(uniform keep 0.5, L1, round_to=1) + apply; file->file = analyze(path) "
        "(parses the file) + plan + apply + save_model to a temp file.",
        f"Torch-Pruning: MetaPruner(MagnitudeImportance(p=1), pruning_ratio=0.5, final "
        f"classifier/heads ignored), construction (traces the model) + step(), median of "
        f"{args.tp_reps} fresh deep copies; torch threads {torch_threads}. "
        "The repetitions of the two sides alternate (one of ours, one of Torch-Pruning's, "
        "...), so both medians sample the same stretches of this VM's drifting speed. "
        "Each timed call on either side directly follows one untimed call of the same side "
        "(warm caches for both: otherwise every graph_ops call ran right after Torch-Pruning "
        "had filled the caches with a deep-copied torch model, which made the 0.4 ms MLP "
        "calls 2-3x slower), and the import-time heap is frozen (gc.freeze) so the gc.collect "
        "before each timed call walks only the repetitions' own objects. Before 2026-11-30 "
        "neither was done. "
        "'TP total / ours' > 1 means graph_ops (in-memory total) is faster."
        + (f" Geometric mean over the zoo models where both ran: {geo:.2f}x." if geo else ""),
    ]
    cov_notes = [
        "MACs: batch 1, Conv/ConvTranspose/Gemm/MatMul multiply-accumulates; torch = "
        "FlopCounterMode / 2 (tests.zoo.torch_macs). Ideal = MACs if every prunable channel "
        "were halved (each MAC node side scaled by 1 - 0.5 x its prunable channel fraction; "
        "depthwise: output side only); achieved/ideal > 1 comes from ceil rounding, grouped "
        "conv blocks and frozen channels inside mixed layouts. TP MACs after 0.5 use the same "
        "FlopCounterMode as the torch column.",
    ]
    sections = [
        "## Speed: graph_ops vs Torch-Pruning (uniform 50% channel pruning)",
        "\n".join(f"- {n}" for n in notes), speed,
    ]
    if tp_errors:
        sections += ["Torch-Pruning errors:", "\n".join(tp_errors)]
    sections += [
        "## Coverage and MAC counting", "\n".join(f"- {n}" for n in cov_notes), cov_table,
        "## Frozen groups", frozen_table,
    ]
    elapsed = time.perf_counter() - start
    out = write_report("bench_graph_ops", "graph_ops benchmark", env, sections, elapsed)
    print("\n\n".join(sections))
    log(f"total {elapsed:.0f} s; wrote {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
