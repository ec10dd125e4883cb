"""The README's first command: compress the embedded default model with AMC and show the result.

The default model is a small ResNet trained on scikit-learn's digits, with held-out labelled
digits as calibration data. The demo lists its channel groups, runs the DDPG search under a 50%
MACs budget with least-squares reconstruction in the loop, runs the uniform baseline under the
same budget, and prints measured params, MACs, ORT latency and accuracy on digits the search
never saw. Everything printed is measured on this run.
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib import resources
from pathlib import Path

import onnx

from graph_ops import analyze

from . import api
from .compress import compress
from .latency import measure_interleaved


def _assets() -> tuple[Path, Path]:
    base = resources.files("onnx_amc") / "assets"
    return Path(str(base / "digits_cnn.onnx")), Path(str(base / "digits_calib.npz"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flops", type=float, default=0.5, help="fraction of MACs to keep")
    ap.add_argument("--episodes", type=int, default=None)
    ap.add_argument("--out", default="out/demo", help="output folder")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    model_path, calib_path = _assets()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = onnx.load(str(model_path))
    rep = api.inspect(analyze(model))
    n_pr = sum(g["prunable"] for g in rep.groups)
    print(f"model: {model_path.name} (trained on scikit-learn digits), {len(rep.groups)} channel "
          f"groups, {n_pr} prunable, prunable share of MACs "
          f"{100 * (rep.prunable_mac_share or 0):.1f}%")
    for g in rep.groups:
        status = "prunable" if g["prunable"] else f"frozen: {g['frozen_reason']}"
        print(f"  group {g['index']:>2}: {g['channels']:>3} channels, "
              f"{100 * (g['mac_share'] or 0):5.1f}% of MACs, {status}")

    print(f"\nAMC search (DDPG), keep {args.flops} of MACs, reconstruction in the loop ...",
          flush=True)
    out = out_dir / "digits_cnn_amc.onnx"
    res = compress(model, calib=calib_path, flops=args.flops, reconstruct=True,
                   episodes=args.episodes, threads=args.threads, progress=sys.stderr.isatty(),
                   log_path=out.with_name(out.name + ".log.jsonl"))
    res.save(out)
    # One ratio for every group: with counts rounded to multiples of 8 the small 16-channel
    # groups could only keep 8 or 16, so the uniform baseline rounds to 1 to reach the budget.
    uni = compress(model, calib=calib_path, flops=args.flops, reconstruct=True,
                   search="uniform", threads=args.threads, round_to=1)
    feeds = {"input": __import__("numpy").zeros((1, 1, 32, 32), "float32")}
    lat = measure_interleaved([model, res.model, uni.model], feeds, threads=args.threads)

    n_test = res.metrics_after.num_samples
    rows = [
        ("params", f"{res.params_before:,}", f"{res.params_after:,}", f"{uni.params_after:,}"),
        ("MACs", f"{res.macs_before:,}", f"{res.macs_after:,}", f"{uni.macs_after:,}"),
        (f"ORT latency (median, batch 1, {args.threads} thread)", f"{lat[0].median_ms:.3f} ms",
         f"{lat[1].median_ms:.3f} ms", f"{lat[2].median_ms:.3f} ms"),
        (f"top-1 on {n_test} test digits", f"{res.metrics_before.top1:.4f}",
         f"{res.metrics_after.top1:.4f}", f"{uni.metrics_after.top1:.4f}"),
    ]
    print(f"\n{res.episodes_run} episodes in {res.seconds:.0f} s; test digits were used by "
          "neither the search nor the reconstruction:")
    w = max(len(r[0]) for r in rows)
    print(f"  {'':<{w}}  {'original':>14}  {'AMC (DDPG)':>14}  {'uniform (r=1)':>14}")
    for name, b, af, un in rows:
        print(f"  {name:<{w}}  {b:>14}  {af:>14}  {un:>14}")
    print("\nkeep ratio per group (AMC):")
    for g in res.groups:
        if "keep" in g:
            print(f"  group {g['index']:>2}: {g['keep']:.2f} of {g['channels']} channels")
    from .report import write_report
    from .report.collect import compress_report, finish

    paths = write_report(finish(compress_report(res, model=str(model_path), output=out,
                                                threads=args.threads), []), out_dir / "report")
    print(f"\nwrote {out}, {out.name}.policy.json, {out.name}.log.jsonl")
    print(f"report: {paths['html']} (open it in a browser; also report.md, report.json)")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    sys.exit(main())
