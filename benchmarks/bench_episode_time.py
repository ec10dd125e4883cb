"""Issue 4's speed target: one search episode on MobileNetV2 at 224x224 scoring 256 calibration
images in under 2 s on two cores, so that a 400-episode search finishes in under 15 minutes.

Runs the real thing: ``compress`` on the zoo MobileNetV2 exported at 224x224, with photo crops
as calibration data (label-free fidelity), a 50% MACs budget, DDPG, two ORT threads, and the
default (no) reconstruction. ``compress`` splits the calibration set into a reconstruction half,
a search quarter and a test quarter, so ``--calib-size 1024`` (the default) gives every episode
256 images to score. Reports the search's wall time from the per-episode records, the time per
evaluated (not cached) episode, and the set-up before the first episode.

Run: ``OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_episode_time.py``
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
from bench_graph_ops import environment, log, md_table, write_report
from bench_latency_rounding import export_at
from natural_images import photo_crops

from onnx_amc.compress import compress
from onnx_amc.data import CalibrationSet, split_calibration


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=400)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--calib-size", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=224)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    env = environment(["stable-baselines3"])
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        model = export_at("mobilenet_v2", args.size, tmp)
        path = tmp / "mobilenet_v2.onnx"
        path.write_bytes(model.SerializeToString())
        calib = tmp / "crops.npz"
        np.savez(calib, input=photo_crops(args.calib_size, args.size, args.size, seed=0))
        t_call = time.perf_counter()
        res = compress(str(path), calib=str(calib), flops=0.5, episodes=args.episodes,
                       warmup=args.warmup, threads=args.threads, seed=0,
                       measure_latency=False, progress=False)
        call_s = time.perf_counter() - t_call
    recs = res.records
    elapsed = [r["elapsed_s"] for r in recs]
    steps = np.diff([0.0, *elapsed])
    fresh = [s for s, r in zip(steps, recs, strict=True) if not r.get("cached")]
    evals = [r["eval_seconds"] for r in recs if not r.get("cached")]
    search_s = elapsed[-1]
    # The search part, split as compress splits it (the split depends on the size only).
    sizes = CalibrationSet({"input": np.zeros((args.calib_size, 1), np.float32)}, None, "n")
    _, rest = split_calibration(sizes, seed=0)
    n_images = len(split_calibration(rest, seed=0)[0])
    rows = [
        ["episodes run (evaluated / served from the cache)",
         f"{len(recs)} ({len(fresh)} / {len(recs) - len(fresh)})"],
        ["images scored per evaluated episode", f"{n_images}"],
        ["search wall time (first episode start to last episode end)", f"{search_s:.1f} s"],
        ["per episode, all: mean", f"{search_s / len(recs):.3f} s"],
        ["per evaluated episode: median / mean / max",
         f"{statistics.median(fresh):.3f} / {statistics.mean(fresh):.3f} / {max(fresh):.3f} s"],
        ["of which evaluation (prune + session + images): median / max",
         f"{statistics.median(evals):.3f} / {max(evals):.3f} s"],
        ["compress() in all (analysis, reference outputs, search, final test)",
         f"{call_s:.1f} s"],
        ["best candidate: MACs kept / search fidelity / test top-1 agreement",
         f"{res.budget_use:.3f} / {res.search_score:.4f} / {res.metrics_after.score:.4f}"],
    ]
    log(f"{len(recs)} episodes in {search_s:.1f} s")
    section = (f"## {args.episodes}-episode search, MobileNetV2 @ {args.size}x{args.size}\n\n"
               f"- `compress(flops=0.5, episodes={args.episodes}, warmup={args.warmup}, "
               f"threads={args.threads}, seed=0, measure_latency=False)`, reconstruction off, "
               f"{args.calib_size} photo crops split into reconstruction / search / test parts; "
               "an episode's time is the interval between the ends of consecutive episodes "
               "(agent steps, training, pruning and scoring)\n\n"
               + md_table(["quantity", "value"], rows))
    out = write_report("bench_episode_time", "Search episode time (issue 4)", env, [section],
                       time.perf_counter() - t0)
    print(out.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
