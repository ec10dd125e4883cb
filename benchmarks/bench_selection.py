"""Does the search's best candidate generalise? Every candidate of one DDPG search, re-scored on
the test part that the search never saw.

Why: a search returns the candidate with the best score on its search part (180 digits for the
digits models). Picking the maximum of hundreds of noisy scores selects candidates whose search
score is high partly by luck (the winner's curse), and the agent's later episodes concentrate on
policies that suit those particular digits. This script runs one real ``compress`` (DDPG, its
per-episode log), then scores every logged policy on the same test part that ``compress``
reports on, with the same reconstruction, and tabulates search and test scores by stretches of
episodes, for the top candidates by search score, and for uniform pruning under the same budget.

Run: ``OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_selection.py``
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from bench_graph_ops import environment, log, md_table, write_report

from graph_ops import analyze
from onnx_amc.api import load_calib
from onnx_amc.compress import compress
from onnx_amc.data import split_calibration
from onnx_amc.scoring import CandidateScorer, ScoringSpec

REPO = Path(__file__).resolve().parents[1]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(REPO / "tests/data/digits/digits_mobilenetv2.onnx"))
    ap.add_argument("--calib", default=str(REPO / "onnx_amc/assets/digits_calib.npz"))
    ap.add_argument("--flops", type=float, default=0.25)
    ap.add_argument("--episodes", type=int, default=400)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--round-to", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    env = environment(["stable-baselines3"])
    kw = dict(calib=args.calib, flops=args.flops, reconstruct=True, seed=args.seed,
              round_to=args.round_to, measure_latency=False, progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "search.jsonl"
        res = compress(args.model, search="ddpg", episodes=args.episodes, warmup=args.warmup,
                       log_path=str(log_path), **kw)
        rows = [json.loads(line) for line in log_path.read_text().splitlines()]
    uni = compress(args.model, search="uniform", **kw)
    log(f"search done in {time.perf_counter() - t0:.0f} s; re-scoring on the test part")

    # The same three parts as compress (same seed), scored as compress scores its result.
    a = analyze(args.model)
    data = load_calib(a.model, args.calib, seed=args.seed)
    fit, rest = split_calibration(data, seed=args.seed)
    _, test_part = split_calibration(rest, seed=args.seed)
    scorer = CandidateScorer(ScoringSpec(
        model=a.model.SerializeToString(), search_data=test_part, fit_inputs=fit.inputs,
        round_to=args.round_to, reconstruct=True, seed=args.seed), analysis=a)
    eps = [r for r in rows if "episode" in r]
    cache: dict[str, float] = {}
    for r in eps:
        key = json.dumps(r["policy"], sort_keys=True)
        if key not in cache:
            cache[key] = scorer(r["policy"]).score
    search = np.array([r["score"] for r in eps])
    test = np.array([cache[json.dumps(r["policy"], sort_keys=True)] for r in eps])
    best = int(np.argmax(search))  # first maximum: the one compress returns
    assert abs(test[best] - res.metrics_after.score) < 1e-9, "re-scoring disagrees with compress"

    n = len(eps)
    step = max(1, n // 8)
    blocks = [[f"{i + 1}-{min(i + step, n)}", f"{search[i:i + step].mean():.4f}",
               f"{test[i:i + step].mean():.4f}", f"{search[i:i + step].max():.4f}"]
              for i in range(0, n, step)]
    order = np.argsort(-search, kind="stable")
    tops = [[f"top {k}", f"{search[order[:k]].mean():.4f}", f"{test[order[:k]].mean():.4f}",
             f"{test[order[:k]].max():.4f}"] for k in (1, 5, 20)]
    summary = [
        f"- model `{Path(args.model).name}`, {args.flops} of the MACs, reconstruction on, "
        f"channel counts rounded to {args.round_to}, DDPG {args.episodes} episodes "
        f"({args.warmup} of warm-up), seed {args.seed}; search part {len(search)} episodes "
        f"scored on the search part, test part {len(test_part)} samples",
        f"- correlation of search and test score over all candidates: "
        f"{np.corrcoef(search, test)[0, 1]:.3f}",
        f"- returned candidate (first maximum of the search score, episode {best + 1}): search "
        f"{search[best]:.4f}, test {test[best]:.4f}",
        f"- best test score of any candidate: {test.max():.4f} (episode "
        f"{int(np.argmax(test)) + 1}, search {search[int(np.argmax(test))]:.4f})",
        f"- uniform pruning, same budget and rounding: search "
        f"{uni.records[-1]['score']:.4f}, test {uni.metrics_after.score:.4f}",
    ]
    sections = [
        "## Search score against test score, one DDPG search\n\n" + "\n".join(summary),
        "## By stretches of episodes\n\n" + md_table(
            ["episodes", "mean search score", "mean test score", "max search score"], blocks),
        "## The top candidates by search score\n\n" + md_table(
            ["candidates", "mean search score", "mean test score", "max test score"], tops),
    ]
    out = write_report("selection", "Does the best search candidate generalise?", env,
                       sections, time.perf_counter() - t0)
    print(out.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
