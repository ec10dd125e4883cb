"""ONNX Runtime CPU latency of uniformly pruned zoo CNNs, and which ``round_to`` to default to.

For each CNN of the test zoo at its zoo input size, and for resnet50 / mobilenet_v2 also at
224x224: the original model against uniform keep 0.5 and 0.75 with ``round_to`` in
{1, 4, 8, 16}, at 1 and 2 intra-op threads. resnet50 at 224 also gets deliberately
misaligned variants: every group keeps k+1 (or k-1) channels where k is the round_to=16 count.

Latency comes from ``onnx_amc.latency.measure_interleaved`` (sessions from bytes,
ORT_ENABLE_ALL, sequential, batch 1; warm-up, then one run of every candidate in turn until the
95% CI of every median is within ``--rel-ci`` or the time cap is hit), so every candidate of a
model sees the same machine drift.

Run from the repository root::

    .venv/bin/python benchmarks/bench_latency_rounding.py

Prints Markdown tables and writes them, with the command line, date, CPU and versions, to
``benchmarks/results/bench_latency_rounding.md``.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from bench_graph_ops import REPO, environment, fmt_m, log, md_table, write_report

from graph_ops import (
    Analysis,
    analyze,
    apply,
    count,
    importance,
    keep_count,
    make_plan,
    uniform_policy,
)
from onnx_amc.latency import LatencyStats, measure_interleaved

CNNS: tuple[str, ...] = (
    "resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_small", "vgg16_bn", "resnext",
    "shufflenet_v2", "efficientnet", "densenet", "yolo", "unet",
)
BIG: dict[str, int] = {"resnet50": 224, "mobilenet_v2": 224}
KEEPS: tuple[float, ...] = (0.5, 0.75)
ROUNDS: tuple[int, ...] = (1, 4, 8, 16)
THREADS: tuple[int, ...] = (1, 2)
MISALIGNED_AT: tuple[str, int] = ("resnet50", 224)


@dataclass
class Candidate:
    label: str
    keep: float | None  # None: original
    round_to: int | None
    model: bytes
    macs: int | None
    params: int
    same_as: str | None = None  # identical plan to an earlier candidate: not re-measured


@dataclass
class Config:
    name: str
    size: int
    shapes: dict[str, tuple[int, ...]]
    source: str  # how the model was obtained


def cpu_flags() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break
    wanted = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_tile")
    return ", ".join(f for f in wanted if f in flags) or "none of avx2/avx512"


def spatial_is_static(model: onnx.ModelProto) -> bool:
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return any(d.HasField("dim_value") for d in dims[2:])


def export_at(name: str, size: int, tmpdir: Path) -> onnx.ModelProto:
    """Re-export zoo model ``name`` from torch at size x size (same weights, BN folded)."""
    import torch

    from tests.zoo import output_names, torch_model
    from tests.zoo.export import single_thread

    model = torch_model(name)
    path = tmpdir / f"{name}_{size}.onnx"
    outs = list(output_names(name))
    with warnings.catch_warnings(), single_thread():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (torch.randn(1, 3, size, size),), str(path), dynamo=False, opset_version=17,
            input_names=["input"], output_names=outs,
            dynamic_axes={n: {0: "batch"} for n in ["input", *outs]}, do_constant_folding=True)
    return onnx.load(str(path))


def load_config(name: str, size: int | None, tmpdir: Path) -> tuple[Config, onnx.ModelProto]:
    from tests.zoo import input_shapes, model_path

    zoo_shapes = input_shapes(name)
    model = onnx.load(str(model_path(name, opset=17, bn="folded")))
    zoo_size = next(iter(zoo_shapes.values()))[-1]
    if size is None or size == zoo_size:
        return Config(name, zoo_size, zoo_shapes, "zoo export"), model
    shapes = {"input": (1, 3, size, size)}
    if spatial_is_static(model):
        model = export_at(name, size, tmpdir)
        source = "re-exported at this size (zoo export has static H, W)"
    else:
        source = "zoo export (dynamic H, W)"
    return Config(name, size, shapes, source), model


def candidates(a: Analysis, original: onnx.ModelProto, score: np.ndarray) -> list[Candidate]:
    c0 = count(a)
    out = [Candidate("original", None, None, original.SerializeToString(), c0.macs, c0.params)]
    seen: dict[bytes, str] = {}
    for keep in KEEPS:
        for r in ROUNDS:
            plan = make_plan(a, uniform_policy(a, keep), score, round_to=r)
            label = f"keep {keep} r{r}"
            key = np.packbits(plan.keep).tobytes()
            c = count(a, plan.keep)
            if key in seen:
                out.append(Candidate(label, keep, r, b"", c.macs, c.params, seen[key]))
                continue
            seen[key] = label
            out.append(Candidate(label, keep, r, apply(a, plan).SerializeToString(), c.macs,
                                 c.params))
    return out


def misaligned(a: Analysis, score: np.ndarray, keep: float, delta: int) -> Candidate:
    """Every prunable group keeps k + delta channels (k = its round_to=16 count), chosen by
    importance; groups with grouped-conv blocks, or where k + delta leaves [1, size), keep k."""
    policy: dict[str, Any] = {}
    for g in a.prunable_groups:
        k = keep_count(g.size, keep, 16, g.blocks)
        n = k + delta
        if g.blocks > 1 or not 1 <= n < g.size:
            policy[g.id] = keep if k < g.size else 1.0
            continue
        s = score[g.classes]
        policy[g.id] = np.sort(np.argsort(-s, kind="stable")[:n]).tolist()
    plan = make_plan(a, policy, score, round_to=16)
    c = count(a, plan.keep)
    return Candidate(f"keep {keep} r16 {delta:+d} (misaligned)", keep, 16,
                     apply(a, plan).SerializeToString(), c.macs, c.params)


def check_outputs(cands: Sequence[Candidate], feeds: dict[str, np.ndarray]) -> None:
    """Every measured candidate runs and produces the original's output shapes."""
    ref: list[tuple[int, ...]] | None = None
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    for c in cands:
        if c.same_as:
            continue
        sess = ort.InferenceSession(c.model, opts, providers=["CPUExecutionProvider"])
        shapes = [tuple(o.shape) for o in sess.run(None, feeds)]
        if ref is None:
            ref = shapes
        elif shapes != ref:
            raise RuntimeError(f"{c.label}: output shapes {shapes} != original {ref}")


def measure(cands: Sequence[Candidate], feeds: dict[str, np.ndarray], threads: int,
            args: argparse.Namespace) -> dict[str, LatencyStats]:
    live = [c for c in cands if not c.same_as]
    stats = measure_interleaved(
        [c.model for c in live], feeds, threads=threads, warmup=args.warmup,
        min_runs=args.min_runs, rel_ci=args.rel_ci,
        min_time_s=args.min_time * len(live), time_cap_s=args.cap * len(live))
    by_label = {c.label: s for c, s in zip(live, stats, strict=True)}
    for c in cands:
        if c.same_as:
            by_label[c.label] = by_label[c.same_as]
    return by_label


def geomean(xs: Sequence[float]) -> float:
    return float(math.exp(sum(math.log(x) for x in xs) / len(xs))) if xs else math.nan


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="*", default=list(CNNS), help="zoo CNNs to measure")
    ap.add_argument("--no-224", action="store_true", help="skip the 224x224 configurations")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--min-runs", type=int, default=20)
    ap.add_argument("--rel-ci", type=float, default=0.01,
                    help="stop when every median's 95%% CI half-width is within this fraction")
    ap.add_argument("--min-time", type=float, default=0.5,
                    help="minimum timed seconds per candidate (interleaved)")
    ap.add_argument("--cap", type=float, default=2.0,
                    help="time cap in seconds per candidate and thread count")
    args = ap.parse_args(argv)

    start = time.perf_counter()
    env = environment()
    env.insert(3, f"- CPU SIMD flags: {cpu_flags()}")
    from tests.zoo import sample_inputs

    plan_configs: list[tuple[str, int | None]] = [(n, None) for n in args.models]
    if not args.no_224:
        plan_configs += [(n, s) for n, s in BIG.items() if n in args.models]

    sections: list[str] = []
    summary: dict[tuple[float, int, int], list[float]] = {}  # (keep, r, threads) -> speedups
    mac_ratio: dict[tuple[float, int], list[float]] = {}  # (keep, r) -> MACs / MACs(r1)
    wins: dict[tuple[float, int, int], int] = {}
    sig: dict[tuple[float, int, int], list[int]] = {}  # faster / slower than r1 beyond CI
    detail_tables: list[str] = []
    mis_rows: list[list[Any]] = []
    sensitive: dict[float, int] = {}  # keep -> configurations where round_to changes the plan
    insensitive: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench_latency_") as tmp:
        for name, size in plan_configs:
            t0 = time.perf_counter()
            cfg, model = load_config(name, size, Path(tmp))
            a = analyze(model, input_shapes=cfg.shapes)
            score = importance(a, "l1")
            cands = candidates(a, model, score)
            if (name, cfg.size) == MISALIGNED_AT:
                cands += [misaligned(a, score, keep, d) for keep in KEEPS for d in (1, -1)]
            if size is None:
                feeds = sample_inputs(name, batch=1)
            else:
                rng = np.random.default_rng(0)
                feeds = {k: rng.standard_normal(v, dtype=np.float32)
                         for k, v in cfg.shapes.items()}
            check_outputs(cands, feeds)
            log(f"[{time.perf_counter() - start:6.1f}s] {name}@{cfg.size}: "
                f"{sum(not c.same_as for c in cands)} distinct models built in "
                f"{time.perf_counter() - t0:.1f}s; measuring ...")
            res = {t: measure(cands, feeds, t, args) for t in THREADS}
            base = {t: res[t]["original"].median_ms for t in THREADS}

            rows = []
            r1_macs = {c.keep: c.macs for c in cands if c.round_to == 1}
            for c in cands:
                cells: list[Any] = [c.label + (f" (= {c.same_as})" if c.same_as else ""),
                                    fmt_m(c.macs), fmt_m(c.params)]
                for t in THREADS:
                    s = res[t][c.label]
                    cells += [f"{s.median_ms:.2f}", f"{base[t] / s.median_ms:.2f}x",
                              f"{100 * s.ci95_rel:.1f}%{'*' if s.capped else ''}"]
                rows.append(cells)
            header = ["candidate", "MACs M", "params M"]
            for t in THREADS:
                header += [f"{t}T ms", f"{t}T speedup", f"{t}T CI±"]
            detail_tables.append(f"### {name} @ {cfg.size}x{cfg.size} ({cfg.source})\n\n"
                                 + md_table(header, rows))

            for keep in KEEPS:
                group = [c for c in cands if c.keep == keep and "misaligned" not in c.label]
                if len({c.same_as or c.label for c in group}) == 1:
                    insensitive.append(f"{name}@{cfg.size} keep {keep}")
                    continue  # every round_to gives the same plan: nothing to compare
                sensitive[keep] = sensitive.get(keep, 0) + 1
                for c in group:
                    assert c.round_to is not None
                    if c.macs is not None and r1_macs.get(keep):
                        mac_ratio.setdefault((keep, c.round_to), []).append(
                            c.macs / r1_macs[keep])  # type: ignore[operator]
                for t in THREADS:
                    r1 = res[t][f"keep {keep} r1"]
                    best = min(group, key=lambda c, t=t: res[t][c.label].median_ms)
                    assert best.round_to is not None
                    wins[(keep, best.round_to, t)] = wins.get((keep, best.round_to, t), 0) + 1
                    for c in group:
                        assert c.round_to is not None
                        s = res[t][c.label]
                        summary.setdefault((keep, c.round_to, t), []).append(
                            base[t] / s.median_ms)
                        # beyond noise: the medians differ by more than both CI half-widths
                        margin = r1.ci95_rel * r1.median_ms + s.ci95_rel * s.median_ms
                        counts = sig.setdefault((keep, c.round_to, t), [0, 0])
                        if s.median_ms < r1.median_ms - margin:
                            counts[0] += 1
                        elif s.median_ms > r1.median_ms + margin:
                            counts[1] += 1
            if (name, cfg.size) == MISALIGNED_AT:
                for c in cands:
                    if c.keep is None or (c.round_to != 16 and "misaligned" not in c.label):
                        continue
                    cells = [c.label, fmt_m(c.macs)]
                    for t in THREADS:
                        s = res[t][c.label]
                        ref = res[t][f"keep {c.keep} r16"].median_ms
                        cells += [f"{s.median_ms:.2f}", f"{s.median_ms / ref:.3f}"]
                    mis_rows.append(cells)

    n_cfg = len(plan_configs)
    sum_rows = []
    for keep in KEEPS:
        for r in ROUNDS:
            cells: list[Any] = [f"{keep}", f"{r}",
                                f"{geomean(mac_ratio.get((keep, r), [])):.3f}"]
            for t in THREADS:
                sp = summary.get((keep, r, t), [])
                f, s = sig.get((keep, r, t), [0, 0])
                cells += [f"{geomean(sp):.3f}x",
                          f"{wins.get((keep, r, t), 0)}/{sensitive.get(keep, 0)}",
                          "-" if r == 1 else f"{f}/{s}"]
            sum_rows.append(cells)
    sum_header = ["keep", "round_to", "MACs / MACs(r1) (geomean)"]
    for t in THREADS:
        sum_header += [f"{t}T speedup vs original (geomean)", f"{t}T fastest in",
                       f"{t}T faster/slower than r1 beyond CI"]
    summary_table = md_table(sum_header, sum_rows)

    # Conclusion, computed: rank round_to by mean log speedup over keeps and thread counts.
    score_r = {r: float(np.mean([math.log(geomean(summary[(k, r, t)])) for k in KEEPS
                                 for t in THREADS if summary.get((k, r, t))])) for r in ROUNDS}
    best_r = max(ROUNDS, key=lambda r: score_r[r])
    lines = ["- mean geomean speedup over keep {0.5, 0.75} x {1, 2} threads: "
             + ", ".join(f"round_to={r}: {math.exp(score_r[r]):.3f}x" for r in ROUNDS),
             f"- best by that measure: round_to={best_r} "
             f"({100 * (math.exp(score_r[best_r] - score_r[1]) - 1):+.1f}% vs round_to=1, with "
             + ", ".join(f"{geomean(mac_ratio.get((k, best_r), [])):.3f}x MACs of round_to=1 "
                         f"at keep {k}" for k in KEEPS) + ")"]
    cfg_names = ", ".join(f"{n}@{s or 'zoo size'}" for n, s in plan_configs)
    sections.append("## Summary over models (uniform keep, L1 importance)")
    sections.append(
        f"- {n_cfg} model/size configurations: {cfg_names}.\n"
        "- Summary rows only use configurations where round_to changes the plan; identical "
        f"for every round_to (all widths already multiples of 16): {', '.join(insensitive) or 'none'}.\n"
        "- speedup = original median / candidate median (same interleaved run). 'fastest in' "
        "counts configurations where this round_to had the lowest median among the four "
        "(ties between identical plans go to the smallest round_to). "
        "'beyond CI' counts configurations where the two medians differ by more than the sum "
        "of their 95% CI half-widths.\n" + "\n".join(lines))
    sections.append(summary_table)
    if mis_rows:
        mh = ["candidate", "MACs M"]
        for t in THREADS:
            mh += [f"{t}T ms", f"{t}T time / aligned r16"]
        sections.append(f"## Misaligned keep counts: {MISALIGNED_AT[0]} @ {MISALIGNED_AT[1]}")
        sections.append("- k = round_to=16 keep count of every group; +1/-1 keeps one channel "
                        "more/fewer in every group (top by L1). Ratios > 1: slower than aligned.")
        sections.append(md_table(mh, mis_rows))
    sections.append("## Per model")
    sections.append(
        f"- CI± = 95% CI half-width of the median relative to it (target {100 * args.rel_ci:.1f}%; "
        "* = time cap reached first). '(= label)': same plan as that candidate, measured once.")
    sections += detail_tables

    elapsed = time.perf_counter() - start
    out = write_report("bench_latency_rounding", "ONNX Runtime latency and round_to", env,
                       sections, elapsed)
    print("\n\n".join(sections))
    log(f"total {elapsed:.0f} s; wrote {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
