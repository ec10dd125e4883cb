"""Does a search against a latency profile pick candidates whose latency the profile
underestimates?

Under ``--latency R --target PROFILE.json`` with budget filling, every candidate of the search is
predicted at R of the original, and the search keeps the most accurate one.  If the profile
underestimates some candidates (their real cost hidden from the prediction), those keep more
capacity for the same predicted latency and tend to score higher: the chosen result would then
measure over R more often than a typical candidate.  This script runs such searches, measures
every distinct candidate interleaved with the original, and reports the chosen candidate's
measured ratio against the others', and how score and measured ratio go together.

Run: ``OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_profile_selection.py``
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_graph_ops import environment, log, md_table, write_report
from bench_latency_search import first_sample, prepare
from bench_prediction import spearman

from graph_ops import analyze, apply, importance, make_plan
from onnx_amc.compress import compress
from onnx_amc.latency import measure_interleaved
from onnx_amc.targets.predict import save_profile
from onnx_amc.targets.profile import build_profile


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="digits:mobilenet_v3_small@96")
    ap.add_argument("--latency", type=float, default=0.5)
    ap.add_argument("--episodes", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=15)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--profile-time", type=float, default=60.0)
    ap.add_argument("--calib-size", type=int, default=256)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    env = environment()
    tmp = Path(tempfile.mkdtemp(prefix="bench_profile_selection_"))
    path, calib, _ = prepare(args.model, tmp, n=args.calib_size)
    profile = build_profile(str(path), time_budget_s=args.profile_time, seed=0)
    prof_path = tmp / "profile.json"
    save_profile(profile, prof_path)
    a = analyze(str(path))
    score = importance(a, "l1")
    one = first_sample(calib)
    rows, summary = [], []
    for seed in range(args.seeds):
        r = compress(str(path), calib=calib, latency=args.latency, target=str(prof_path),
                     reconstruct=True, seed=seed, episodes=args.episodes,
                     warmup=args.warmup, measure_latency=False)
        seen, cands = set(), []
        for rec in r.records:
            key = tuple(rec["keep_counts"])
            if key in seen:
                continue
            seen.add(key)
            cands.append(rec)
        chosen_key = tuple(next(rec["keep_counts"] for rec in r.records
                                if rec.get("episode") == r.chosen_episode))
        models = [a.model.SerializeToString()]
        matched = 0
        for rec in cands:
            plan = make_plan(a, rec["policy"], score, round_to=r.round_to)
            counts = tuple(int(np.count_nonzero(plan.keep[g.classes]))
                           for g in a.prunable_groups)
            matched += counts == tuple(rec["keep_counts"])  # the rebuild is the candidate
            models.append(apply(a, plan).SerializeToString())
        stats = measure_interleaved(models, one, threads=1, min_time_s=1.0, time_cap_s=10.0)
        base = stats[0].median_ms
        ratios = [st.median_ms / base for st in stats[1:]]
        scores = [rec["score"] for rec in cands]
        uses = [rec["budget_use"] for rec in cands]
        chosen = [tuple(rec["keep_counts"]) == chosen_key for rec in cands]
        ci = chosen.index(True)
        others = [x for x, c in zip(ratios, chosen, strict=True) if not c]
        rank = 1 + sum(x > ratios[ci] for x in others)
        rho = spearman(np.array(scores), np.array(ratios))  # scores tie often (1/64 steps)
        log(f"seed {seed}: {len(cands)} candidates; chosen {ratios[ci]:.3f}, others median "
            f"{statistics.median(others):.3f}")
        summary.append([seed, len(cands), f"{matched}/{len(cands)}", f"{uses[ci]:.3f}",
                        f"{ratios[ci]:.3f}", f"{statistics.median(others):.3f}",
                        f"{min(others):.3f}-{max(others):.3f}",
                        f"{rank} of {len(cands)}", f"{rho:+.2f}"])
        rows += [[seed, i, "yes" if c else "", f"{u:.3f}", f"{x:.3f}", f"{s:.4f}"]
                 for i, (c, u, x, s) in enumerate(zip(chosen, uses, ratios, scores,
                                                      strict=True))]
    sections = [
        "## Chosen candidate against the other candidates of its search\n\n"
        f"- `--latency {args.latency} --target PROFILE.json` on {args.model}, profile built "
        f"here in a {args.profile_time:g} s budget; {args.episodes} episodes ({args.warmup} "
        "warm-up), reconstruction on; every distinct candidate (by keep counts) rebuilt from "
        "its recorded policy and measured interleaved with the original (1 thread)\n"
        "- predicted = the profile's ratio as the search saw it (budget use); measured = median "
        "ratio to the original in one interleaved run of all candidates of the seed; rank 1 = "
        "the slowest when measured; Spearman = rank correlation (ties share their mean rank) "
        "of search score and measured ratio over the candidates\n\n"
        + md_table(["seed", "candidates", "rebuilt keep counts = recorded",
                    "chosen: predicted", "chosen: measured", "others: median measured", "others: range", "chosen's rank (slowest = 1)",
                    "Spearman score vs measured"], summary),
        "## Every candidate\n\n"
        + md_table(["seed", "#", "chosen", "predicted ratio", "measured ratio",
                    "search score"], rows),
    ]
    out = write_report("profile_selection", "Selection against a latency profile", env,
                       sections, time.perf_counter() - t0)
    print(out.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
