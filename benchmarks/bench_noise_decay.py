"""Does DDPG's exploration schedule matter? The official constant decay against one that follows
the episode budget, with random search as the reference.

Why: the official AMC code decays the exploration sigma by 0.95 per episode after warm-up, which
leaves 5% of it after 58 episodes.  In a 400-episode search the last ~240 episodes then replay
the actor's nearly noise-free policy, and most of them hit the evaluation cache.  This script
runs ``compress`` with both schedules (``ddpg={"sigma_decay": 0.95}`` against the default,
:func:`onnx_amc.search.agent.noise_decay`) and random search on the same cells, and reports the
held-out score of the returned candidate and how many distinct candidates each search scored.

It runs on seeds 10-12 by default: each seed draws its own calibration split, so these are not
the splits ``bench_search`` reports on (seeds 0-2), and choosing a schedule here does not tune it
to that benchmark's test digits.

Run: ``OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_noise_decay.py``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bench_graph_ops import environment, log, md_table, write_report

from onnx_amc.compress import compress
from onnx_amc.search.agent import OFFICIAL_DECAY, noise_decay

REPO = Path(__file__).resolve().parents[1]
CELLS = ("digits_mobilenetv2:0.25:on,digits_mobilenetv2:0.5:on,digits_vgg:0.5:off,"
         "digits_resnet:0.5:off")
METHODS = {  # name: (search, ddpg settings)
    "DDPG, decay 0.95 (official)": ("ddpg", {"sigma_decay": OFFICIAL_DECAY}),
    "DDPG, decay by budget (default)": ("ddpg", None),
    "random": ("random", None),
}


def fmt(xs: Sequence[float]) -> str:
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.fmean(xs):.4f} +- {sd:.4f}"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", default=CELLS,
                    help="comma-separated model:MACs-fraction:on|off (reconstruction)")
    ap.add_argument("--seeds", default="10,11,12")
    ap.add_argument("--episodes", type=int, default=400)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--round-to", type=int, default=1)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    env = environment(["stable-baselines3"])
    calib = str(REPO / "onnx_amc/assets/digits_calib.npz")
    seeds = [int(s) for s in args.seeds.split(",")]
    rows, wins = [], {m: 0 for m in METHODS if m != "random"}
    cells = [c.split(":") for c in args.cells.split(",")]
    for name, frac, recon in cells:
        model = str(REPO / f"tests/data/digits/{name}.onnx")
        kw = dict(calib=calib, flops=float(frac), reconstruct=recon == "on",
                  round_to=args.round_to, measure_latency=False)
        scores: dict[str, list[float]] = {m: [] for m in METHODS}
        distinct: dict[str, list[int]] = {m: [] for m in METHODS}
        uniform = []
        for seed in seeds:
            for m, (search, ddpg) in METHODS.items():
                res = compress(model, search=search, episodes=args.episodes,
                               warmup=args.warmup, seed=seed, ddpg=ddpg, **kw)
                scores[m].append(res.metrics_after.score)
                distinct[m].append(len({tuple(r["keep_counts"]) for r in res.records}))
                log(f"{name} {frac} {recon} seed {seed} {m}: {scores[m][-1]:.4f} "
                    f"({distinct[m][-1]} distinct)")
            uniform.append(compress(model, search="uniform", seed=seed, **kw)
                           .metrics_after.score)
        means = {m: statistics.fmean(v) for m, v in scores.items()}
        for m in wins:
            wins[m] += means[m] > max(means["random"], statistics.fmean(uniform))
        rows.append([name, frac, recon, *(fmt(scores[m]) for m in METHODS), fmt(uniform),
                     " / ".join(f"{statistics.fmean(distinct[m]):.0f}" for m in METHODS)])
    decay, after = noise_decay(args.episodes, args.warmup), max(1, args.episodes - args.warmup)
    summary = [
        f"- digits models, top-1 on the test part of each seed's calibration split (179 "
        f"digits); seeds {args.seeds}; {args.episodes} episodes ({args.warmup} of warm-up for "
        f"DDPG); channel counts rounded to {args.round_to}; uniform: bisection, one candidate",
        f"- decay by budget at these episode counts: {decay:.4f} per episode after warm-up "
        f"(sigma at the last episode: {decay ** after:.1%} of its start; official "
        f"{OFFICIAL_DECAY}: {OFFICIAL_DECAY ** after:.1%})",
        *(f"- {m}: mean above random's and uniform's in {w} of {len(cells)} cells"
          for m, w in wins.items()),
    ]
    table = md_table(["model", "MACs kept", "reconstruction", *METHODS, "uniform",
                      "distinct candidates (" + " / ".join(METHODS) + ")"], rows,
                     "lllrrrrr")
    out = write_report("noise_decay", "DDPG exploration: official decay against decay by "
                       "budget", env, ["## Held-out score of the returned candidate\n\n"
                                       + "\n".join(summary) + "\n\n" + table],
                       time.perf_counter() - t0)
    print(out.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
