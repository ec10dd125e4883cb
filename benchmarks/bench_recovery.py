"""How much accuracy uniform pruning loses, and how much recovery wins back without training.

Digits-trained models (real labels): held-out top-1 after uniform keep 0.5 / 0.75 with no
recovery, BN re-estimation only (on the BN-kept exports), least-squares reconstruction, and
both. Pretrained packaged models (no labels): fidelity to the original (top-1 agreement for
classifiers, mean cosine otherwise) on natural images, without and with reconstruction.
Calibration data is split (seed 0) into a fitting half and a disjoint evaluation half.

Run: ``OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_recovery.py``
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import onnx
from bench_graph_ops import REPO, environment, log, md_table, write_report
from natural_images import packaged_crops

from onnx_amc import api
from onnx_amc.data import CalibrationSet, input_specs_from_model, load_calibration
from onnx_amc.errors import InputError

DIGITS = REPO / "tests" / "data" / "digits"
ASSETS = REPO / "onnx_amc" / "assets"
KEEPS = (0.5, 0.75)


def digits_section(threads: int) -> str:
    models = [("digits_cnn (default)", ASSETS / "digits_cnn.onnx", None)] + [
        (n, DIGITS / f"{n}.onnx", DIGITS / f"{n}_bn.onnx")
        for n in ("digits_resnet", "digits_mobilenetv2", "digits_vgg")]
    rows = []
    for label, path, bn_path in models:
        model = onnx.load(str(path))
        calib = load_calibration(ASSETS / "digits_calib.npz", input_specs_from_model(model))
        for keep in KEEPS:
            t = time.perf_counter()
            none = api.prune(model, keep=keep, calib=calib, threads=threads)
            rec = api.prune(model, keep=keep, calib=calib, reconstruct=True,
                            bn_reestimate=False, threads=threads)
            rec_s = time.perf_counter() - t
            bn_only = both = None
            if bn_path is not None:
                bn_model = onnx.load(str(bn_path))
                bn_only = api.prune(bn_model, keep=keep, calib=calib, bn_reestimate=True,
                                    threads=threads).metrics_after.top1
                both = api.prune(bn_model, keep=keep, calib=calib, reconstruct=True,
                                 bn_reestimate=True, threads=threads).metrics_after.top1
            base = none.metrics_before.top1
            lost = base - none.metrics_after.top1
            won = rec.metrics_after.top1 - none.metrics_after.top1
            rows.append([label, keep, f"{none.macs_after / none.macs_before:.3f}", f"{base:.4f}",
                         f"{none.metrics_after.top1:.4f}",
                         "-" if bn_only is None else f"{bn_only:.4f}",
                         f"{rec.metrics_after.top1:.4f}", "-" if both is None else f"{both:.4f}",
                         f"{100 * won / lost:.0f}%" if lost > 0 else "-",
                         f"{rec.reconstruction.seconds:.1f}"])
            log(f"{label} keep {keep}: {rows[-1]} ({rec_s:.0f} s)")
    return ("## Digits-trained models: held-out top-1 (359 digits not used for fitting)\n\n"
            "- uniform keep of every prunable group, L1 importance, round_to 8; 'won back' = "
            "(reconstruction - none) / (original - none)\n\n" + md_table(
                ["model", "keep", "MACs kept", "original", "none", "BN re-est. only",
                 "reconstruction", "recon + BN", "won back", "recon s"], rows))


def packaged_section(threads: int, n_images: int) -> str:
    sys.path.insert(0, str(REPO))
    from tests.packaged import available

    rows = []
    for pm, path in available():
        model = onnx.load(str(path))
        (name, shape), = [(k, v) for k, v in pm.input_shapes.items()]
        x = packaged_crops(pm.name, n_images, shape[2], shape[3], seed=1)
        if shape[0] != 1 and pm.name == "centerface":
            x = x[: (n_images // shape[0]) * shape[0]]
        calib = CalibrationSet({name: x}, None, "sklearn sample photos")
        try:
            api.evaluate(model, calib=calib, measure_latency=False)
        except InputError as exc:  # e.g. time-major outputs: the Evaluator needs batch first
            rows.append([pm.name, "-", "-", "-", "-", "-", "-", f"not evaluated: {exc}"])
            log(f"{pm.name}: {exc}")
            continue
        for keep in KEEPS:
            res = []
            secs = 0.0
            for recon, bn in ((False, False), (True, False), (True, True)):
                r = api.prune(model, keep=keep, calib=calib, reconstruct=recon,
                              bn_reestimate=bn, input_shapes=pm.input_shapes, threads=threads)
                f = r.metrics_after.fidelity
                res.append(f.get("top1_agreement") if f.get("top1_agreement") is not None
                           else f.get("mean_cosine"))
                if r.reconstruction and not bn:
                    secs = r.reconstruction.seconds
            metric = "top-1 agreement" if r.metrics_after.fidelity.get("top1_agreement") \
                is not None else "mean cosine"
            has_bn = any(n.op_type == "BatchNormalization" for n in model.graph.node)
            rows.append([pm.name, keep, f"{r.macs_after / r.macs_before:.3f}", metric,
                         f"{res[0]:.4f}", f"{res[1]:.4f}",
                         f"{res[2]:.4f}" if has_bn else "no BN nodes", f"{secs:.1f}"])
            log(f"{pm.name} keep {keep}: {rows[-1]}")
    return (f"## Pretrained packaged models: fidelity to the original ({n_images} natural "
            "images, half for fitting)\n\n" + md_table(
                ["model", "keep", "MACs kept", "metric", "none", "reconstruction",
                 "recon + BN re-est.", "recon s"],
                rows))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--skip-packaged", action="store_true")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    env = environment()
    sections = [digits_section(args.threads)]
    if not args.skip_packaged:
        sections.append(packaged_section(args.threads, args.images))
    path = write_report("bench_recovery", "Accuracy lost by pruning and won back by recovery",
                        env, sections, time.perf_counter() - t0)
    print(path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
