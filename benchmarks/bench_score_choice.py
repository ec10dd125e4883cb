"""Which search-part score picks the candidate that is best on held-out digits?

Why: a search ranks candidates by a score on its search part, 128 digits when it calibrates on
512 training digits (a quarter of them). Top-1 there moves in steps of 1/128 and ties often, so
the candidate it returns is partly luck. The cross-entropy of the same outputs is continuous.
This script asks, on candidates a real search produced, which number ranks them closer to their
top-1 on the 719 held-out digits, and which one returns the better candidate there:

1. a random search (``compress --search random``, reconstruction on, calibration on the first
   ``--calib-size`` training digits, as ``bench_search --calib-from train``) gives the
   candidates under the MACs budget;
2. every candidate is rebuilt (pruned and reconstructed as the search did) and run on the
   calibration's non-reconstruction half and on the 719 held-out digits;
3. ``--draws`` times, a random ``--search-size`` subset of that half plays the search part; each
   rule picks its candidate there, and the pick's held-out top-1 is recorded.

Rules: ``auto`` (top-1, then closeness of the outputs to the original's, as compress ranks
candidates by default), ``likelihood`` (``exp(-cross-entropy)``, compress ``--score
likelihood``) and ``cosine`` (closeness alone).

Run: ``OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_score_choice.py``
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
from bench_graph_ops import environment, log, md_table, write_report
from bench_latency_search import CALIB, DIGITS, training_digits
from bench_prediction import spearman

from graph_ops import analyze
from onnx_amc.api import load_calib
from onnx_amc.compress import compress
from onnx_amc.data import split_calibration
from onnx_amc.metrics import likelihood
from onnx_amc.scoring import CandidateScorer, ScoringSpec

RULES = ("auto", "likelihood", "cosine")


def per_sample(logits: np.ndarray, ref: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``[3, N]``: hit (top-1 right), log-probability of the label, cosine to the original's
    logits, per sample: each rule's subset score is a mean (of the log: its exp) of a row."""
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    n = np.arange(len(labels))
    o, r = logits.astype(np.float64), ref.astype(np.float64)
    cos = np.sum(o * r, axis=1) / np.maximum(
        np.linalg.norm(o, axis=1) * np.linalg.norm(r, axis=1), 1e-12)
    return np.stack([(logits.argmax(axis=1) == labels).astype(float), logp[n, labels], cos])


def pick(stats: np.ndarray, rule: str) -> int:
    """Index of the candidate ``rule`` returns from ``[candidates, 3]`` subset means; the first
    of full ties, as ``max(records, key=rank_key)``."""
    cols = {"auto": [0, 2], "likelihood": [1, 2], "cosine": [2]}[rule]
    keys = [tuple(row) for row in stats[:, cols]]
    return max(range(len(keys)), key=lambda i: keys[i])


def one_cell(model: Path, budget: float, args: argparse.Namespace, tmp: Path) -> list[list[str]]:
    x, y = training_digits(None, args.calib_size)
    calib = tmp / "train.npz"
    np.savez(calib, input=x, labels=y)
    log_path = tmp / f"{model.stem}_{budget}.jsonl"
    compress(str(model), calib=str(calib), flops=budget, search="random",
             episodes=args.candidates, reconstruct=True, seed=args.seed, round_to=1,
             measure_latency=False, progress=False, log_path=str(log_path))
    rows = [json.loads(line) for line in log_path.read_text().splitlines()]
    policies = {json.dumps(r["policy"], sort_keys=True): r["policy"]
                for r in rows if "episode" in r}
    a = analyze(str(model))
    data = load_calib(a.model, str(calib), seed=args.seed)
    fit, rest = split_calibration(data, seed=args.seed)
    scorer = CandidateScorer(ScoringSpec(
        model=a.model.SerializeToString(), search_data=rest, fit_inputs=fit.inputs,
        round_to=1, reconstruct=True, seed=args.seed), analysis=a)
    name = a.model.graph.input[0].name
    xr, yr = rest.inputs[name], np.asarray(rest.labels)
    with np.load(CALIB) as f:
        xh, yh = f["input"], f["labels"]

    def run(m, xx):
        s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        return s.run(None, {name: xx})[0].reshape(len(xx), -1)

    ref = run(a.model, xr)
    part, held = [], []
    for policy in policies.values():
        cand = scorer.candidate(policy)
        lo = run(cand, xr)
        ps = per_sample(lo, ref, yr)
        assert abs(np.exp(ps[1].mean()) - likelihood(lo, yr)) < 1e-9
        part.append(ps)
        held.append(float(np.mean(run(cand, xh).argmax(axis=1) == yh)))
    part_a, held_a = np.array(part), np.array(held)  # [cands, 3, N], [cands]
    rng = np.random.default_rng(args.seed + 1)
    picks: dict[str, list[float]] = {r: [] for r in RULES}
    rhos: dict[str, list[float]] = {r: [] for r in RULES}
    for _ in range(args.draws):
        idx = rng.choice(len(yr), args.search_size, replace=False)
        stats = part_a[:, :, idx].mean(axis=2)
        for col, rule in enumerate(RULES):
            picks[rule].append(held_a[pick(stats, rule)])
            rho = spearman(stats[:, col], held_a)
            rhos[rule].append(rho if np.isfinite(rho) else 0.0)
    log(f"{model.stem} {budget}: {len(held_a)} candidates, held-out "
        f"{held_a.min():.4f}-{held_a.max():.4f}; picks " + ", ".join(
            f"{r} {statistics.mean(picks[r]):.4f}" for r in RULES))
    return [[model.stem, f"{budget:g}", str(len(held_a)),
             f"{held_a.mean():.4f} ({held_a.min():.4f}-{held_a.max():.4f})", rule,
             f"{statistics.mean(rhos[rule]):.3f}",
             f"{statistics.mean(picks[rule]):.4f} +- {statistics.pstdev(picks[rule]):.4f}",
             f"{held_a.max() - statistics.mean(picks[rule]):.4f}"] for rule in RULES]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="digits_resnet,digits_mobilenetv2,digits_vgg",
                    help="committed digits models (tests/data/digits), comma-separated")
    ap.add_argument("--budgets", default="0.5,0.25", help="MACs fractions to keep")
    ap.add_argument("--candidates", type=int, default=60,
                    help="episodes of the random search that produces the candidates")
    ap.add_argument("--calib-size", type=int, default=512, help="training digits")
    ap.add_argument("--search-size", type=int, default=128,
                    help="digits in each drawn search part (compress uses a quarter of the "
                    "calibration set)")
    ap.add_argument("--draws", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    env = environment()
    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for m in args.models.split(","):
            for b in (float(v) for v in args.budgets.split(",")):
                rows += one_cell(DIGITS / f"{m}.onnx", b, args, Path(tmp))
    sections = [
        "## Search-part score against held-out top-1\n\n"
        f"- candidates: one random search per cell ({args.candidates} episodes, seed "
        f"{args.seed}, reconstruction on, budget filling, channel counts rounded to 1), "
        f"calibrated on the first {args.calib_size} training digits; each rebuilt and run on "
        f"the calibration's non-reconstruction half ({args.calib_size // 2} digits) and on the "
        "719 held-out digits\n"
        f"- {args.draws} draws of a {args.search_size}-digit search part from that half; per "
        "draw each rule picks one candidate. rho: Spearman correlation of the rule's "
        "search-part number with held-out top-1 over the cell's candidates (mean over draws; "
        "a draw where every candidate scores the same counts as 0, since it ranks nothing); "
        "pick: held-out top-1 of the candidate the rule returns (mean +- sd over draws); "
        "regret: best held-out top-1 of any candidate minus the pick's mean\n"
        "- rules: `auto` = top-1, then mean cosine to the original's outputs (compress's "
        "default ranking); `likelihood` = exp(-cross-entropy) of the labels, then cosine "
        "(`--score likelihood`); `cosine` = closeness alone\n\n"
        + md_table(["model", "MACs", "candidates", "held-out top-1 mean (range)", "rule",
                    "rho", "pick held-out top-1", "regret"], rows),
    ]
    out = write_report("score_choice", "Which search-part score picks the best candidate?",
                       env, sections, time.perf_counter() - t0)
    print(out.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
