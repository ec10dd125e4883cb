"""Does the search's best candidate generalise? Every candidate of one DDPG search, re-scored on
the test part that the search never saw.

Why: a search returns the candidate with the best score on its search part (180 digits for the
digits models). Picking the maximum of hundreds of noisy scores selects candidates whose search
score is high partly by luck (the winner's curse), and the agent's later episodes concentrate on
policies that suit those particular digits. This script runs one real ``compress`` (DDPG, its
per-episode log), then scores every logged policy on the same test part that ``compress``
reports on, with the same reconstruction, and tabulates search and test scores by stretches of
episodes, for the top candidates by search score, and for uniform pruning under the same budget.

For a model spec that brings its own held-out set (``packaged:NAME``: 512 further photo crops,
drawn with another seed; ``digits:ARCH@SIZE``: the held-out digits the calibration leaves), every
candidate is also scored there, and the candidate that each selection rule would return is
compared: the reward alone (first maximum), the reward then closeness to the original's outputs
(what compress returns), and closeness alone. Why: on label-free models the reward counts top-1
agreements on a few dozen crops, and the question is which search-part number best predicts
held-out agreement.

Run: ``OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_selection.py``
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from bench_graph_ops import environment, log, md_table, write_report

from graph_ops import analyze
from onnx_amc.api import load_calib
from onnx_amc.compress import compress
from onnx_amc.data import split_calibration
from onnx_amc.metrics import SEARCH_SCORES
from onnx_amc.scoring import CandidateScorer, ScoringSpec
from onnx_amc.search.rewards import rank_key

REPO = Path(__file__).resolve().parents[1]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(REPO / "tests/data/digits/digits_mobilenetv2.onnx"),
                    help="an .onnx file (with --calib), or packaged:NAME / digits:ARCH@SIZE")
    ap.add_argument("--calib", default=str(REPO / "onnx_amc/assets/digits_calib.npz"))
    ap.add_argument("--flops", type=float, default=0.25)
    ap.add_argument("--episodes", type=int, default=400)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--round-to", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--calib-size", type=int, default=256,
                    help="packaged:/digits: specs: calibration samples (half reconstruction, a "
                         "quarter search, a quarter test)")
    ap.add_argument("--test-size", type=int, default=512,
                    help="packaged: specs: held-out photo crops")
    ap.add_argument("--score", default="auto", choices=SEARCH_SCORES,
                    help="what the search maximises (compress --score); test and held-out "
                         "scores stay auto's metric")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    env = environment(["stable-baselines3"])
    with tempfile.TemporaryDirectory() as tmp:
        model, calib, held_set, shapes = _resolve(args, Path(tmp))
        kw = dict(calib=calib, flops=args.flops, reconstruct=True, seed=args.seed,
                  round_to=args.round_to, measure_latency=False, progress=False,
                  input_shapes=shapes, score=args.score)
        log_path = Path(tmp) / "search.jsonl"
        res = compress(model, search="ddpg", episodes=args.episodes, warmup=args.warmup,
                       log_path=str(log_path), **kw)
        rows = [json.loads(line) for line in log_path.read_text().splitlines()]
        uni = compress(model, search="uniform", **kw)
        log(f"search done in {time.perf_counter() - t0:.0f} s; re-scoring on the test part")

        # The same three parts as compress (same seed), scored as compress scores its result.
        a = analyze(model, input_shapes=shapes)
        data = load_calib(a.model, calib, seed=args.seed)
    fit, rest = split_calibration(data, seed=args.seed)
    _, test_part = split_calibration(rest, seed=args.seed)

    def scorer_on(part):
        return CandidateScorer(ScoringSpec(
            model=a.model.SerializeToString(), search_data=part, fit_inputs=fit.inputs,
            input_shapes=shapes, round_to=args.round_to, reconstruct=True, seed=args.seed),
            analysis=a)

    scorers = [scorer_on(test_part)] + ([scorer_on(held_set)] if held_set is not None else [])
    eps = [r for r in rows if "episode" in r]
    cache: dict[str, list[float]] = {}
    for r in eps:
        key = json.dumps(r["policy"], sort_keys=True)
        if key not in cache:
            cache[key] = [sc(r["policy"]).score for sc in scorers]
    search = np.array([r["score"] for r in eps])
    scores = np.array([cache[json.dumps(r["policy"], sort_keys=True)] for r in eps])
    test = scores[:, 0]
    best = max(range(len(eps)), key=lambda i: rank_key(eps[i]))  # the one compress returns
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
        f"({args.warmup} of warm-up), seed {args.seed}, maximising `{args.score}` (compress "
        f"`--score`); search part {len(search)} episodes "
        f"scored on the search part, test part {len(test_part)} samples",
        f"- correlation of search and test score over all candidates: "
        f"{np.corrcoef(search, test)[0, 1]:.3f}",
        f"- returned candidate (highest reward, then closest to the original's outputs, as "
        f"compress ranks them; episode {best + 1}): search "
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
    if held_set is not None:
        sections.append(_rules_section(eps, best, search, scores[:, 1], held_set, uni,
                                       scorers[1]))
    name = "selection" if args.model.endswith(".onnx") else \
        "selection_" + re.sub(r"[^A-Za-z0-9_.@-]+", "_", args.model)
    if args.score != "auto":
        name += "_" + re.sub(r"[^A-Za-z0-9]+", "_", args.score)
    out = write_report(name, "Does the best search candidate generalise?", env,
                       sections, time.perf_counter() - t0)
    print(out.read_text())
    return 0


def _resolve(args: argparse.Namespace, tmp: Path) -> tuple[str, str, Any, Any]:
    """(model path, calibration path, held-out CalibrationSet or None, input shapes or None)."""
    if args.model.endswith(".onnx"):
        return args.model, args.calib, None, None
    from bench_latency_search import input_shapes, prepare

    path, calib, held = prepare(args.model, tmp, n=args.calib_size, n_test=args.test_size)
    return str(path), str(calib), held, input_shapes(args.model)


def _rules_section(eps: Sequence[dict], best: int, search: np.ndarray, held: np.ndarray,
                   held_set: Any, uni: Any, held_scorer: Any) -> str:
    """Which candidate each selection rule returns (``best``: the one compress returned), and
    how it scores on the held-out set."""
    cos = np.array([float((r.get("extra") or {}).get("mean_cosine", float("nan")))
                    for r in eps])
    agree = np.array([float((r.get("extra") or {}).get("top1_agreement", float("nan")))
                      for r in eps])
    rules = {
        "reward alone (first maximum)": int(np.argmax([r["reward"] for r in eps])),
        "reward, then closeness (compress)": best,
        "closeness alone (mean cosine on the search part)": int(np.nanargmax(cos)),
    }
    rows = [[rule, i + 1, f"{search[i]:.4f}", f"{cos[i]:.4f}", f"{held[i]:.4f}"]
            for rule, i in rules.items()]
    uni_held = held_scorer(uni.policy).score
    ok = np.isfinite(cos)
    blend = 0.5 * (agree + cos)  # compress --score agreement+cosine, without labels
    both = np.isfinite(blend)
    blend_corr = (f", search-part agreement+cosine "
                  f"{np.corrcoef(blend[both], held[both])[0, 1]:.3f}" if both.any() else "")
    return (
        f"## Selection rules on a held-out set ({held_set.source})\n\n"
        f"- correlation with the held-out score over all {len(eps)} candidates: search-part "
        f"score {np.corrcoef(search, held)[0, 1]:.3f}, search-part mean cosine "
        f"{np.corrcoef(cos[ok], held[ok])[0, 1]:.3f}{blend_corr}\n"
        f"- best held-out score of any candidate {held.max():.4f}; mean {held.mean():.4f}; "
        f"uniform pruning {uni_held:.4f}\n\n"
        + md_table(["rule", "episode", "search-part score", "search-part mean cosine",
                    "held-out score"], rows))


if __name__ == "__main__":
    sys.exit(main())
