"""Does timing the best candidates again (``compress(confirm=3)``) keep a measured-latency
search's result under its budget?

A ``--latency R`` search on host keeps the candidate with the best reward, and the reward
prices each candidate's one timing: the chosen one may be the one whose timing came out low by
chance.  For each seed this runs one ``compress(latency=R)`` on host (DDPG, reconstruction on)
and then measures, interleaved with the original in one run (``measure_interleaved``, >= 2 s
per model), both the candidate the search alone would have kept (best reward over the
search's own timings) and the one chosen after re-timing the three best.  Reports each one's
latency fraction during the search, at the confirmation and in that final independent run,
and how often each ends over the budget.

Run: ``OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_confirm.py``
"""

from __future__ import annotations

import argparse
import atexit
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench_graph_ops import environment, log, md_table, write_report
from bench_latency_search import first_sample, prepare

from graph_ops import analyze, apply, importance, make_plan
from onnx_amc.compress import compress
from onnx_amc.latency import measure_interleaved
from onnx_amc.search.rewards import rank_key


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="digits:mobilenet_v2@96")
    ap.add_argument("--keep", type=float, default=0.5)
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--episodes", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=15)
    ap.add_argument("--calib-size", type=int, default=256)
    ap.add_argument("--profile-time", type=float, default=60.0)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    env = environment()
    rows: list[list] = []
    final: dict[str, list[float]] = {"search's choice": [], "confirmed choice": []}
    tmp = Path(tempfile.mkdtemp(prefix="bench_confirm_"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)  # ~100 MB of models and data
    for name in args.models.split(","):
        path, calib, _ = prepare(name, tmp, n=args.calib_size, n_test=0)
        a = analyze(str(path))
        score = importance(a, "l1")
        one = first_sample(calib)
        for seed in range(args.seeds):
            res = compress(str(path), calib=calib, latency=args.keep, reconstruct=True,
                           seed=seed, episodes=args.episodes, warmup=args.warmup,
                           profile_time_s=args.profile_time, measure_latency=False)
            first = max(range(len(res.records)), key=lambda i: rank_key(res.records[i]))
            search_rec = res.records[first]
            chosen = next(c for c in res.confirmed if c["episode"] == res.chosen_episode)
            search_conf = next(c for c in res.confirmed
                               if c["episode"] == search_rec.get("episode", first))
            models = [apply(a, make_plan(a, search_rec["policy"], score, round_to=1)), res.model]
            stats = measure_interleaved([a.model, *models], one, threads=1, min_time_s=2.0,
                                        time_cap_s=30.0)
            base = stats[0].median_ms
            unit = res.latency_target_ms / args.keep  # the original's timing in the search
            chosen_rec = next(r for r in res.records if r.get("episode") == chosen["episode"])
            for label, conf, rec, st in (("search's choice", search_conf, search_rec, stats[1]),
                                         ("confirmed choice", chosen, chosen_rec, stats[2])):
                final[label].append(st.median_ms / base)
                rows.append([name, seed, label, conf["episode"],
                             f"{conf['latency_ms_search'] / unit:.3f}",
                             f"{conf['latency_ms'] / unit:.3f}", f"{final[label][-1]:.3f}",
                             "yes" if final[label][-1] > args.keep else "no",
                             f"{rec['score']:.4f}"])
            log(f"{name} seed {seed}: final {rows[-2][6]} (search's choice) / {rows[-1][6]} "
                "(confirmed)")
    summary = [f"- {label}: over the budget in the final run in "
               f"{sum(v > args.keep for v in vals)} of {len(vals)} searches, mean final "
               f"fraction {statistics.mean(vals):.3f}" for label, vals in final.items() if vals]
    sections = [
        f"## Latency budget {args.keep}, host, {args.episodes} episodes ({args.warmup} warm-up), "
        f"reconstruction on, {args.seeds} seeds\n\n" + "\n".join(summary) + "\n\n"
        "Fractions of the original's latency: during the search (the one timing the reward "
        "priced), at the confirmation (the three best timed again), and in a final run that "
        "times the original and both choices interleaved; score = the search part's score (the "
        "reward's)\n\n"
        + md_table(["model", "seed", "candidate", "episode", "search timing",
                    "confirmation timing", "final run", "over budget", "search-part score"],
                   rows),
    ]
    out = write_report("bench_confirm", "Confirming a measured-latency search's choice", env,
                       sections, time.perf_counter() - t0)
    print(out.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
