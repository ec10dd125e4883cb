"""The README's first command: inspect and prune the embedded default model, then measure.

The AMC search is not wired into the CLI yet (issue 4); until then the demo shows the foundation
end to end on real data: channel groups, a uniform prune with and without least-squares
reconstruction, and measured params, MACs, ORT latency, held-out accuracy and agreement with the
original. Everything printed is measured on this run.
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

import onnx

from graph_ops import analyze, save_model

from . import api
from .data import input_specs_from_model, load_calibration, split_calibration
from .evaluate import Evaluator
from .latency import measure_interleaved


def _assets() -> tuple[Path, Path]:
    base = resources.files("onnx_amc") / "assets"
    return Path(str(base / "digits_cnn.onnx")), Path(str(base / "digits_calib.npz"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", type=float, default=0.5, help="uniform keep ratio")
    ap.add_argument("--out", default="out/demo", help="output folder")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    model_path, calib_path = _assets()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = onnx.load(str(model_path))
    a = analyze(model)
    rep = api.inspect(a)
    n_pr = sum(g["prunable"] for g in rep.groups)
    print(f"model: {model_path.name} (trained on scikit-learn digits), {len(rep.groups)} channel "
          f"groups, {n_pr} prunable, prunable share of MACs "
          f"{100 * (rep.prunable_mac_share or 0):.1f}%")
    for g in rep.groups:
        status = "prunable" if g["prunable"] else f"frozen: {g['frozen_reason']}"
        print(f"  group {g['index']:>2}: {g['channels']:>3} channels, "
              f"{100 * (g['mac_share'] or 0):5.1f}% of MACs, {status}")

    calib = load_calibration(calib_path, input_specs_from_model(model))
    plain = api.prune(a, keep=args.keep, calib=calib, threads=args.threads)
    res = api.prune(a, keep=args.keep, calib=calib, reconstruct=True, threads=args.threads)
    out_path = out_dir / "digits_cnn_pruned.onnx"
    save_model(res.model, out_path)

    _, held_out = split_calibration(calib)
    ev = Evaluator(model, held_out, threads=args.threads)
    one = {k: v[:1] for k, v in calib.inputs.items()}
    lat = measure_interleaved([model, res.model], one, threads=args.threads)
    agree = ev.evaluate(res.model).fidelity.get("top1_agreement", float("nan"))
    before, after = res.metrics_before, res.metrics_after

    rows = [
        ("params", f"{res.params_before:,}", f"{res.params_after:,}",
         f"{res.params_after / res.params_before:.3f}x"),
        ("MACs", f"{res.macs_before:,}", f"{res.macs_after:,}",
         f"{res.macs_after / res.macs_before:.3f}x"),
        (f"ORT latency (median, batch 1, {args.threads} thread)", f"{lat[0].median_ms:.3f} ms",
         f"{lat[1].median_ms:.3f} ms", f"{lat[0].median_ms / lat[1].median_ms:.2f}x faster"),
        (f"held-out top-1, no recovery ({len(held_out)} digits)", f"{before.top1:.4f}",
         f"{plain.metrics_after.top1:.4f}", f"{plain.metrics_after.top1 - before.top1:+.4f}"),
        ("held-out top-1, with reconstruction", f"{before.top1:.4f}", f"{after.top1:.4f}",
         f"{after.top1 - before.top1:+.4f}"),
        ("top-1 agreement with original", "1.0000", f"{agree:.4f}", ""),
    ]
    print(f"\nuniform prune, keep {args.keep} of every prunable group; reconstruction fitted on "
          f"{len(calib) - len(held_out)} other digits (least squares, "
          f"{res.reconstruction.seconds:.1f} s):")
    w = max(len(r[0]) for r in rows)
    print(f"  {'':<{w}}  {'before':>14}  {'after':>14}  change")
    for name, b, af, ch in rows:
        print(f"  {name:<{w}}  {b:>14}  {af:>14}  {ch}")
    print(f"\nwrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
