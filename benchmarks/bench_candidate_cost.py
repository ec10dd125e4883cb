"""Cost of evaluating one search candidate, and latency repeatability.

Part 1 (issue 3's target: under 1.5 s on two cores, reconstruction excluded): MobileNetV2 at
224x224 with 256 calibration images. Per candidate: plan a random policy, apply it, serialise,
create an ONNX Runtime session from bytes, run the 256 images, and measure latency. The original
is analysed and its outputs computed once, as the search does. Reconstruction's cost is reported
separately.

Part 2: repeatability of ``onnx_amc.latency.measure``: coefficient of variation of the median over
5 repeated measurements per zoo model (target <= 3%), next to the CV of what a ``--latency``
search uses: a pruned variant's latency as a fraction of the original's, measured interleaved.

Run: ``OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_candidate_cost.py``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from bench_graph_ops import environment, log, md_table, write_report
from bench_latency_rounding import export_at
from natural_images import photo_crops

from graph_ops import analyze, apply, importance, make_plan
from onnx_amc.data import CalibrationSet, split_calibration
from onnx_amc.evaluate import Evaluator
from onnx_amc.latency import measure, measure_interleaved, relative_timer
from onnx_amc.reconstruct import reconstruct


def candidate_cost(threads: int, n_candidates: int, images: int) -> tuple[str, dict]:
    with tempfile.TemporaryDirectory() as tmp:
        model = export_at("mobilenet_v2", 224, Path(tmp))
    x = photo_crops(images, 224, 224, seed=0)
    calib = CalibrationSet({"input": x}, None, "sklearn sample photos")
    t0 = time.perf_counter()
    a = analyze(model)
    score = importance(a)
    ev = Evaluator(model, calib, threads=threads)  # batch size measured, as in the search
    timer = relative_timer(model, calib.first_sample(), threads=threads)  # the search's timer
    timer(None)  # the original's median: the unit, measured once
    setup = time.perf_counter() - t0
    ev32 = Evaluator(model, calib, threads=threads, batch_size=32)  # the old fixed size
    rng = np.random.default_rng(0)
    rows, totals = [], []
    for i in range(n_candidates):
        policy = {g.id: float(rng.uniform(0.3, 1.0)) for g in a.prunable_groups}
        t = [time.perf_counter()]
        plan = make_plan(a, policy, score)
        pruned = apply(a, plan)
        data = pruned.SerializeToString()
        t.append(time.perf_counter())
        metrics = ev.evaluate(data)
        t.append(time.perf_counter())
        lat_ms = timer(data)  # as CandidateScorer times a candidate for a --latency budget
        t.append(time.perf_counter())
        total = t[-1] - t[0]
        totals.append(total)
        t32 = time.perf_counter()
        ev32.run(data)  # not part of the candidate's cost: the comparison with batch 32
        t32 = time.perf_counter() - t32
        rows.append([i, f"{t[1] - t[0]:.3f}", f"{t[2] - t[1]:.3f}", f"{t32:.3f}",
                     f"{t[3] - t[2]:.3f}", f"{total:.3f}", f"{lat_ms:.2f}"])
        del metrics  # random-weight zoo model: only the cost matters here
        log(f"candidate {i}: {total:.2f} s")
    # Reconstruction, reported separately (fit on half the images).
    fit, _ = split_calibration(calib, seed=0)
    plan = make_plan(a, {g.id: 0.5 for g in a.prunable_groups}, score)
    pruned = apply(a, plan)
    t = time.perf_counter()
    _, report = reconstruct(a.model, pruned, a, plan, fit.inputs, threads=threads)
    recon_s = time.perf_counter() - t
    table = md_table(["candidate", "plan+apply+serialise s",
                      f"{images} images s (batch {ev.batch_size})",
                      f"{images} images s (batch 32, for comparison)",
                      "latency s", "total s", "latency ms"],
                     rows)
    summary = (f"- setup once (analyse, importance, original's outputs on {images} images, "
               f"original's latency): {setup:.2f} s\n- per candidate: median {statistics.median(totals):.2f} s, "
               f"max {max(totals):.2f} s over {n_candidates} random policies (keep 0.3-1.0 per "
               f"group), {threads} ORT threads; batch size {ev.batch_size}, measured on the "
               f"reference pass (Evaluator's default)\n"
               "- latency: `relative_timer(original)(candidate)`, as the search times a "
               "candidate for a `--latency` budget (a FLOPs or params budget skips it): "
               "with one thread interleaved with the original, with more measured alone "
               "(see `relative_timer`); `measure`'s defaults\n"
               f"- setup includes the original's latency: {timer(None):.2f} ms\n"
               f"- reconstruction (keep 0.5, {len(fit)} fit images, {len(report.fitted)} layers "
               f"fitted): {recon_s:.2f} s")
    return ("## One candidate evaluation: MobileNetV2 @ 224x224, "
            f"{images} images\n\n{summary}\n\n{table}"), {"median": statistics.median(totals)}


def repeatability(models: Sequence[str]) -> str:
    from graph_ops import uniform_policy
    from tests.zoo import model_path, sample_inputs

    rows = []
    for name in models:
        m = onnx.load(str(model_path(name, 17, "folded")))
        feeds = {k: v[:1] for k, v in sample_inputs(name, batch=1).items()}
        medians = [measure(m, feeds, threads=1).median_ms for _ in range(5)]
        cv = statistics.pstdev(medians) / statistics.mean(medians)
        # What a --latency search relies on: a candidate's latency as a fraction of the
        # original's, measured interleaved (both see the same drift of the machine).
        a = analyze(m)
        pruned = apply(a, make_plan(a, uniform_policy(a, 0.5), importance(a), round_to=8))
        ratios = []
        for _ in range(5):
            orig, cand = measure_interleaved([m, pruned], feeds, threads=1)
            ratios.append(cand.median_ms / orig.median_ms)
        rcv = statistics.pstdev(ratios) / statistics.mean(ratios)
        rows.append([name, " / ".join(f"{v:.3f}" for v in medians), f"{100 * cv:.2f}%",
                     "yes" if cv <= 0.03 else "no", " / ".join(f"{r:.3f}" for r in ratios),
                     f"{100 * rcv:.2f}%"])
        log(f"{name}: CV {100 * cv:.2f}%, ratio CV {100 * rcv:.2f}%")
    return ("## Latency repeatability: 5 x `measure(model, threads=1)` per zoo model\n\n"
            "- CV = population std / mean of the 5 medians; target <= 3%\n"
            "- ratio: 5 x `measure_interleaved([original, pruned])` with the model at uniform "
            "keep 0.5 (rounded to 8), pruned median / original median; this fraction is what "
            "a `--latency` budget is judged on\n\n"
            + md_table(["model", "medians ms", "CV", "<= 3%", "ratios pruned / original",
                        "ratio CV"], rows))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--candidates", type=int, default=8)
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--skip-repeatability", action="store_true")
    ap.add_argument("--skip-candidates", action="store_true")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    env = environment()
    sections = [] if args.skip_candidates else [
        candidate_cost(args.threads, args.candidates, args.images)[0]]
    if not args.skip_repeatability:
        from tests.zoo import NAMES

        sections.append(repeatability(NAMES))  # every zoo model
    path = write_report("bench_candidate_cost", "Candidate evaluation cost and latency "
                        "repeatability", env, sections, time.perf_counter() - t0)
    print(path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
