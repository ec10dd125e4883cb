"""AMC's claim on digits-trained models: does the DDPG policy beat uniform and random search at
equal budgets? Held-out top-1 on test digits that neither the search nor the reconstruction saw,
mean and standard deviation over seeds, with reconstruction on and off; and what the agent kept
per group next to the group's kernel size and MACs.

Run: ``OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_search.py``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence

from bench_graph_ops import REPO, environment, log, md_table, write_report

from graph_ops import analyze, group_macs
from onnx_amc.compress import compress

MODELS = ("digits_resnet", "digits_mobilenetv2", "digits_vgg")
CALIB = REPO / "onnx_amc" / "assets" / "digits_calib.npz"


def _mean_sd(xs: Sequence[float]) -> str:
    return f"{statistics.mean(xs):.4f} +- {statistics.pstdev(xs):.4f}"


def _kernel(a, gid: str) -> str:
    g = a.group_by_id[gid]
    ks = set()
    for b in a.ctx.births:
        if a.class_group[a.raw_to_class[b.layout[0]]] == g.index:
            node = a.view.nodes[b.node_index]
            if node.op_type == "Conv":
                w = a.view.const(node.input[1])
                ks.add("x".join(str(d) for d in w.shape[2:]))
            else:
                ks.add(node.op_type)
    return "/".join(sorted(ks))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=15)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--budgets", default="0.5,0.25")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    env = environment()
    rows, learned = [], []
    budgets = [float(b) for b in args.budgets.split(",")]
    for name in MODELS:
        path = REPO / "tests" / "data" / "digits" / f"{name}.onnx"
        for budget in budgets:
            for recon in (True, False):
                scores: dict[str, list[float]] = {"ddpg": [], "random": [], "uniform": []}
                macs: dict[str, list[float]] = {k: [] for k in scores}
                for seed in range(args.seeds):
                    for search in scores:
                        if search == "uniform" and seed > 0:
                            continue  # deterministic: one run
                        res = compress(str(path), calib=CALIB, flops=budget, search=search,
                                       episodes=args.episodes, warmup=args.warmup, seed=seed,
                                       reconstruct=recon, round_to=1 if search == "uniform"
                                       else 8)
                        scores[search].append(res.metrics_after.top1)
                        macs[search].append(res.macs_after / res.macs_before)
                        if search == "ddpg" and recon and seed == 0:
                            a = analyze(str(path))
                            gm = group_macs(a)
                            for g in res.groups:
                                if "keep" in g:
                                    learned.append([name, budget, g["index"], g["channels"],
                                                    _kernel(a, g["id"]),
                                                    f"{gm.get(g['index'], 0) / 1e6:.2f}",
                                                    f"{g['keep']:.2f}"])
                        log(f"{name} {budget} recon={recon} seed={seed} {search}: "
                            f"{res.metrics_after.top1:.4f}")
                base = res.metrics_before.top1
                rows.append([name, budget, "on" if recon else "off", f"{base:.4f}",
                             _mean_sd(scores["ddpg"]), _mean_sd(scores["random"]),
                             f"{scores['uniform'][0]:.4f}",
                             f"{statistics.mean(macs['ddpg']):.3f} / "
                             f"{statistics.mean(macs['random']):.3f} / {macs['uniform'][0]:.3f}"])
    sections = [
        "## DDPG vs random vs uniform, held-out top-1 on test digits\n\n"
        f"- {args.seeds} seeds; DDPG and random: {args.episodes} episodes ({args.warmup} of "
        "warm-up for DDPG), channel counts rounded to 8; uniform: one ratio found by bisection, "
        "rounded to 1 so that it reaches the budget (rounding to 8 leaves 16-channel groups only "
        "8 or 16); all under the same hard MACs budget; calibration digits split into "
        "reconstruction (360), search (180) and test (179) parts\n\n"
        + md_table(["model", "MACs kept", "reconstruction", "original", "DDPG", "random",
                    "uniform", "MACs used (DDPG / random / uniform)"], rows),
        "## What the agent kept (DDPG, seed 0, reconstruction on)\n\n"
        + md_table(["model", "MACs kept", "group", "channels", "kernel", "MACs M (touching)",
                    "keep"], learned),
    ]
    path = write_report("bench_search", "AMC search against baselines", env, sections,
                        time.perf_counter() - t0)
    print(path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
