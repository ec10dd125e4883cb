"""Command line: a thin layer over onnx_amc.api. Exit codes: 0 ok, 1 gate failed or internal
error, 2 bad usage or input (one line on stderr, never a traceback)."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import click

from graph_ops import DEFAULT_ROUND_TO, GraphOpsError, save_model

from . import __version__, api
from .cli_types import FINITE, FiniteRange, check_outputs, input_files
from .errors import InputError
from .metrics import SEARCH_SCORES

log = logging.getLogger("onnx_amc")


def _human(n: int | None) -> str:
    if n is None:
        return "unknown (pass --input-shape)"
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.3f}{unit}"
    return str(n)


def _parse_shapes(values: tuple[str, ...]) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for v in values:
        name, sep, dims = v.partition("=")
        try:
            if not sep or not name:
                raise ValueError
            shape = tuple(int(d) for d in dims.split(","))
            if any(d <= 0 for d in shape):
                raise ValueError
        except ValueError:
            raise InputError(f"--input-shape expects NAME=D1,D2,... with positive ints, got '{v}'"
                             ) from None
        shapes[name] = shape
    return shapes


def _check_output(model: str, out: str, *sidecars: str, inputs: tuple[str | None, ...] = (),
                  report_dir: Path | None = None) -> Path:
    """OUT, the files written beside it (``OUT<suffix>`` for each sidecar suffix) and the report
    files: none may be an input (the model, its external data, ``inputs``), a folder, or in a
    folder that cannot be written."""
    o = Path(out)
    if not Path(model).is_file():  # said here: the checks below compare with it
        raise InputError(f"{model}: no such file" if not Path(model).exists()
                         else f"{model}: not a file")
    outs = [o, *(o.with_name(o.name + s) for s in sidecars), *_report_files(report_dir)]
    check_outputs(outs, input_files(model, others=inputs))
    return o


def _report_files(report_dir: Path | None) -> list[Path]:
    """The files --report writes, where its folder exists already (a new one holds nothing
    that could be overwritten)."""
    if report_dir is None or not report_dir.is_dir():
        return []
    from .report.write import REPORT_FILES

    return [report_dir / name for name in REPORT_FILES.values()]


def _write(what, path: Path) -> None:
    """Run a write of outputs; an OS error (disk full, a folder vanished) is one line."""
    try:
        what(path)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None


class _Group(click.Group):
    """Turns every expected failure into one line on stderr and exit code 2."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        """Click's own usage errors (a bad option value, a missing argument, an unknown
        command) as one line too: in standalone mode click prints the usage, a hint and the
        error on four lines."""
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except click.exceptions.ClickException as exc:
            where = exc.ctx.command_path if getattr(exc, "ctx", None) is not None else "onnx-amc"
            hint = f" (see '{where} --help')" if isinstance(exc, click.UsageError) else ""
            click.echo(f"onnx-amc: error: {exc.format_message()}{hint}", err=True)
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            click.echo("onnx-amc: interrupted", err=True)
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (InputError, GraphOpsError) as exc:
            click.echo(f"onnx-amc: error: {exc}", err=True)
            sys.exit(2)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeyboardInterrupt:
            click.echo("onnx-amc: interrupted", err=True)
            sys.exit(130)
        except BrokenPipeError:
            # The reader left (`onnx-amc inspect m.onnx | head`): outputs are already written,
            # so end quietly with the status a SIGPIPE'd shell tool has, and keep Python from
            # complaining again while it flushes the dead stdout at exit.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(141)
        except Exception as exc:  # noqa: BLE001 - the contract is one line, never a traceback
            if os.environ.get("ONNX_AMC_DEBUG"):
                raise
            click.echo(f"onnx-amc: internal error: {exc.__class__.__name__}: {exc} "
                       "(set ONNX_AMC_DEBUG=1 for a traceback)", err=True)
            sys.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="onnx-amc")
@click.option("-v", "--verbose", is_flag=True, help="Log progress details to stderr.")
def main(verbose: bool) -> None:
    """onnx-amc: AMC channel pruning for ONNX models.

    inspect shows the channel groups, prune applies a ratio or a policy, compress searches the
    policy with AMC under a FLOPs, params or latency budget, evaluate measures accuracy,
    fidelity and latency, profile measures a device's per-op latency for --target.
    Exit codes: 0 ok, 1 a CI gate failed (or an internal error), 2 bad usage or input,
    130 interrupted."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="onnx-amc: %(levelname)s: %(message)s")


_model_arg = click.argument("model", type=click.Path(dir_okay=False))
_shape_opt = click.option(
    "--input-shape", "input_shape", multiple=True, metavar="NAME=D1,D2,...",
    help="Concrete shape for a dynamic input (needed for MACs), e.g. input=1,3,640,640. "
         "Repeat for several inputs.")


def _image_options(image_size, resize_shorter, scale, mean, std, bgr, layout):
    from .data import ImageOptions

    def floats(v: str | None, what: str):
        if v is None:
            return None
        try:
            return tuple(float(x) for x in v.split(","))
        except ValueError:
            raise InputError(f"{what} expects comma-separated numbers, got '{v}'") from None

    kw: dict = {}
    if image_size:
        try:
            h, w = (int(x) for x in image_size.lower().split("x"))
            if h <= 0 or w <= 0:
                raise ValueError
        except ValueError:
            raise InputError(f"--image-size expects HxW with positive sizes, got "
                             f"'{image_size}'") from None
        kw["size"] = (h, w)
    if resize_shorter:
        kw["resize_shorter"] = resize_shorter
    if scale is not None:
        kw["scale"] = scale
    if mean:
        kw["mean"] = floats(mean, "--mean")
    if std:
        kw["std"] = floats(std, "--std")
    if bgr:
        kw["channel_order"] = "BGR"
    if layout:
        kw["layout"] = layout.upper()
    return ImageOptions(**kw)


def calib_options(fn):
    """--calib and its preprocessing options, shared by evaluate, prune and compress."""
    opts = [
        click.option("--calib-size", type=click.IntRange(min=1), help="Use N samples "
                     "(seeded shuffle)."),
        click.option("--image-size", metavar="HxW", help="Image folders: crop size (default: "
                     "the model's input size)."),
        click.option("--resize-shorter", type=click.IntRange(min=1), help="Image folders: "
                     "resize the shorter side to N before the centre crop."),
        click.option("--scale", type=FINITE, help="Image folders: pixel multiplier "
                     "(default 1/255)."),
        click.option("--mean", metavar="M1,M2,M3", help="Image folders: per-channel mean "
                     "(default ImageNet)."),
        click.option("--std", metavar="S1,S2,S3", help="Image folders: per-channel std "
                     "(default ImageNet)."),
        click.option("--bgr", is_flag=True, help="Image folders: feed BGR instead of RGB."),
        click.option("--layout", type=click.Choice(["NCHW", "NHWC"], case_sensitive=False),
                     help="Image folders: input layout (default: inferred from the model)."),
    ]
    for o in reversed(opts):
        fn = o(fn)
    return fn


def gate_options(fn):
    """CI gates and --report, shared by compress, prune and evaluate."""
    opts = [
        click.option("--max-accuracy-drop", type=FINITE, metavar="X", help="Gate: fail (exit 1) "
                     "if accuracy (or fidelity without labels) on held-out calibration data "
                     "drops by more than X, absolute (0.01 = one point)."),
        click.option("--min-speedup", type=FINITE, metavar="S", help="Gate: fail (exit 1) if "
                     "the measured latency speedup (before / after) is below S."),
        click.option("--max-size", "max_size", type=FINITE, metavar="MB", help="Gate: fail "
                     "(exit 1) if the written model is larger than MB megabytes (10^6 bytes)."),
        click.option("--report", "report_dir", type=click.Path(),
                     help="Write report.json, report.md and report.html (with plots) here."),
    ]
    for o in reversed(opts):
        fn = o(fn)
    return fn


def _limits(max_accuracy_drop, min_speedup, max_size):
    from .gates import GateLimits

    limits = GateLimits(max_accuracy_drop, min_speedup, max_size)
    try:
        limits.validate()
    except ValueError as exc:
        raise InputError(str(exc)) from None
    return limits


def _check_report_dir(report_dir: str | None) -> Path | None:
    if report_dir is None:
        return None
    d = Path(report_dir)
    if d.exists() and not d.is_dir():
        raise InputError(f"--report {report_dir}: exists and is not a folder")
    if not d.parent.resolve().is_dir():
        raise InputError(f"--report {report_dir}: parent folder does not exist")
    return d


def _gates_and_report(limits, report: dict | None, report_dir: Path | None, **numbers) -> int:
    """Check the gates, write the report (status PASS/FAIL/NONE), print one line per failed
    gate on stderr; the exit code: 0, or 1 when a gate failed."""
    from .gates import check_gates

    try:
        gates = check_gates(limits, **numbers)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    if report is not None and report_dir is not None:
        from .report import write_report
        from .report.collect import finish

        paths = write_report(finish(report, gates), report_dir)
        click.echo(f"report: {paths['html']} (also report.json, report.md)")
    for g in gates:
        if g.passed:
            click.echo(f"gate passed: {g.name}: {g.message}")
        else:
            click.echo(f"onnx-amc: gate failed: {g.name}: {g.message}", err=True)
    return 0 if all(g.passed for g in gates) else 1


@main.command()
@_model_arg
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (a valid "
              "starting point for prune --policy).")
@_shape_opt
def inspect(model: str, as_json: bool, input_shape: tuple[str, ...]) -> None:
    """List channel groups: id, channels, producers, share of MACs, and why frozen ones are."""
    rep = api.inspect(model, input_shapes=_parse_shapes(input_shape))
    if as_json:
        click.echo(json.dumps(rep.as_dict(), indent=2))
        return
    click.echo(f"{model}: opset {rep.opset}, {rep.nodes} nodes, params {_human(rep.params)}, "
               f"MACs {_human(rep.macs)}")
    click.echo(f"{'#':>4} {'channels':>8} {'MACs%':>6}  status / producers -> id")
    for g in rep.groups:
        share = f"{100 * g['mac_share']:.1f}" if g["mac_share"] is not None else "?"
        prod = ", ".join(g["producers"][:3]) + (" ..." if len(g["producers"]) > 3 else "")
        if g["prunable"]:
            status = "prunable" + (f" ({g['blocks']} blocks)" if g.get("blocks") else "")
            click.echo(f"{g['index']:>4} {g['channels']:>8} {share:>6}  {status}: {prod} -> "
                       f"{g['id']}")
        else:
            click.echo(f"{g['index']:>4} {g['channels']:>8} {share:>6}  FROZEN: "
                       f"{g['frozen_reason']} (at {g['frozen_node']}) -> {g['id']}")
    n_pr = sum(g["prunable"] for g in rep.groups)
    share = rep.prunable_mac_share
    click.echo(f"summary: {n_pr}/{len(rep.groups)} groups prunable; prunable share of MACs: "
               + (f"{100 * share:.1f}%" if share is not None else "unknown (pass --input-shape)"))


@main.command()
@_model_arg
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False),
              help="Where to write the pruned model (never the input).")
@click.option("--keep", type=FINITE, help="Keep ratio for every prunable group, in (0, 1].")
@click.option("--policy", type=click.Path(dir_okay=False),
              help="JSON policy: group id -> keep ratio or kept indices (inspect --json works).")
@click.option("--criterion", type=click.Choice(["l1", "l2"]), default="l1", show_default=True,
              help="Channel importance: norm of producer weights.")
@click.option("--round-to", type=int, default=DEFAULT_ROUND_TO, show_default=True,
              help="Round kept channel counts up to a multiple of N (8 measured fastest on "
                   "ONNX Runtime CPU; 1 disables rounding).")
@_shape_opt
@click.option("--calib", type=click.Path(), help="Calibration data (see evaluate): enables "
              "--reconstruct / --bn-reestimate and reports held-out metrics before and after.")
@click.option("--reconstruct", is_flag=True, help="Re-fit the consumers of pruned channels by "
              "least squares on the fitting half of --calib.")
@click.option("--bn-reestimate", is_flag=True,
              help="Re-estimate BatchNormalization statistics on the fitting half of --calib "
                   "(adaptive BN; helps only when the data matches the training distribution).")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="ONNX Runtime threads for reconstruction and evaluation.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the fit/evaluation split and of position sampling.")
@calib_options
@gate_options
def prune(model: str, out: str, keep: float | None, policy: str | None, criterion: str,
          round_to: int, input_shape: tuple[str, ...], calib: str | None, reconstruct: bool,
          bn_reestimate: bool, threads: int, seed: int, calib_size, image_size,
          resize_shorter, scale, mean, std, bgr, layout, max_accuracy_drop, min_speedup,
          max_size, report_dir) -> None:
    """Write a smaller model; print params and MACs before and after (and held-out metrics
    with --calib). With gates, exit 1 when one fails (the model is still written)."""
    if (keep is None) == (policy is None):
        raise InputError("give exactly one of --keep R or --policy FILE.json")
    limits = _limits(max_accuracy_drop, min_speedup, max_size)
    rdir = _check_report_dir(report_dir)
    out_path = _check_output(model, out, inputs=(policy, calib), report_dir=rdir)
    if limits.max_accuracy_drop is not None and calib is None:
        raise InputError("--max-accuracy-drop needs --calib DATA to score the model before "
                         "and after")
    pol = api.load_policy(policy) if policy else None
    res = api.prune(model, keep=keep, policy=pol, criterion=criterion, round_to=round_to,
                    input_shapes=_parse_shapes(input_shape), calib=calib,
                    reconstruct=reconstruct, bn_reestimate=bn_reestimate, threads=threads,
                    seed=seed, calib_size=calib_size,
                    image_options=_image_options(image_size, resize_shorter, scale, mean, std,
                                                 bgr, layout))
    _write(lambda p: save_model(res.model, p), out_path)
    click.echo(f"params: {_human(res.params_before)} -> {_human(res.params_after)}")
    mb, ma = res.macs_before, res.macs_after
    ratio = f" ({ma / mb:.3f}x)" if mb and ma is not None else ""
    click.echo(f"MACs:   {_human(mb)} -> {_human(ma)}{ratio}")
    if res.reconstruction is not None:
        r = res.reconstruction
        click.echo(f"reconstruction: {len(r.fitted)} layers fitted, {len(r.skipped)} skipped "
                   f"({r.seconds:.1f} s)")
        for n in r.skipped:
            click.echo(f"  skipped {n.node}: {n.reason}")
    if res.bn_reestimated:
        click.echo("BatchNormalization statistics re-estimated")
    if res.metrics_before is not None:
        b, af = res.metrics_before, res.metrics_after
        click.echo(f"held-out {b.score_name} ({af.num_samples} samples not used for fitting): "
                   f"{b.score:.4f} -> {af.score:.4f}")
    click.echo(f"wrote {out_path}")
    lat_b = lat_a = None
    if limits.min_speedup is not None or rdir is not None:
        lat_b, lat_a = _measure_pair(model, out_path, input_shape, threads)
        click.echo(f"latency: {lat_b.median_ms:.3f} -> {lat_a.median_ms:.3f} ms "
                   f"({lat_b.median_ms / lat_a.median_ms:.2f}x, median, batch 1, {threads} "
                   "thread(s))")
    report = None
    if rdir is not None:
        from .report.collect import prune_report

        report = prune_report(res, model=model, output=out_path, threads=threads,
                              latency_before=lat_b, latency_after=lat_a)
    mb_, ma_ = res.metrics_before, res.metrics_after
    code = _gates_and_report(
        limits, report, rdir,
        score_before=mb_.score if mb_ is not None else None,
        score_after=ma_.score if ma_ is not None else None,
        score_name=mb_.score_name if mb_ is not None else "accuracy",
        latency_before_ms=lat_b.median_ms if lat_b is not None else None,
        latency_after_ms=lat_a.median_ms if lat_a is not None else None,
        size_bytes=out_path.stat().st_size)
    sys.exit(code)


def _measure_pair(model: str, out: Path, input_shape, threads: int):
    """Latency of the input and the written model, interleaved (same conditions), batch 1."""
    import numpy as np

    from graph_ops import load_model

    from .latency import make_session, measure_interleaved, random_inputs

    before = load_model(model)
    shapes = _parse_shapes(input_shape)
    if shapes:  # dynamic dims made concrete by the user: random float inputs of those shapes
        feeds = {k: np.random.default_rng(0).standard_normal(v).astype(np.float32)
                 for k, v in shapes.items()}
    else:
        feeds = random_inputs(make_session(before, threads))
    return measure_interleaved([before, load_model(str(out))], feeds, threads=threads)


@main.command()
@_model_arg
@click.option("--calib", required=True, type=click.Path(),
              help="Calibration data: .npz (one array per input, optional 'labels'), .npy, or "
                   "a folder of images (class subfolders give labels).")
@click.option("--reference", type=click.Path(dir_okay=False),
              help="Original model: adds fidelity (top-1 agreement, relative L2, cosine) and "
                   "its latency.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="ONNX Runtime intra-op threads.")
@click.option("--ep", "providers", metavar="PROVIDER[,PROVIDER]", help="ONNX Runtime "
              "execution providers for the latency measurement (default CPUExecutionProvider).")
@calib_options
@gate_options
def evaluate(model: str, calib: str, reference: str | None, threads: int,
             providers: str | None, calib_size, image_size, resize_shorter, scale, mean, std, bgr, layout,
             max_accuracy_drop, min_speedup, max_size, report_dir) -> None:
    """Print accuracy (with labels), fidelity to --reference, and measured latency. Gates
    compare MODEL with --reference (exit 1 when one fails)."""
    limits = _limits(max_accuracy_drop, min_speedup, max_size)
    rdir = _check_report_dir(report_dir)
    if rdir is not None:
        check_outputs(_report_files(rdir), input_files(model, reference, others=(calib,)))
    if reference is None and (limits.max_accuracy_drop is not None
                              or limits.min_speedup is not None):
        raise InputError("--max-accuracy-drop and --min-speedup compare with the original: "
                         "give --reference ORIG")
    if providers:
        from .latency import resolve_providers

        resolve_providers(providers)  # one line and exit 2 before any work
    res = api.evaluate(model, calib=calib, reference=reference, threads=threads,
                       providers=providers,
                       calib_size=calib_size,
                       image_options=_image_options(image_size, resize_shorter, scale, mean,
                                                    std, bgr, layout))
    m = res.metrics
    click.echo(f"samples: {m.num_samples}")
    if m.top1 is not None:
        click.echo(f"top-1: {m.top1:.4f}" + (f"  top-5: {m.top5:.4f}" if m.top5 is not None
                                             else ""))
    if reference:
        f = m.fidelity
        if f.get("top1_agreement") is not None:
            click.echo(f"top-1 agreement with reference: {f['top1_agreement']:.4f}")
        click.echo(f"mean cosine: {f.get('mean_cosine', float('nan')):.6f}  "
                   f"mean relative L2: {f.get('mean_rel_l2', float('nan')):.6f}")
    lat = res.latency
    click.echo(f"latency: median {lat.median_ms:.3f} ms (IQR {lat.iqr_ms:.3f}, {lat.runs} runs, "
               f"{lat.threads} thread{'s' if lat.threads > 1 else ''}, batch 1)")
    if res.reference_latency is not None:
        r = res.reference_latency
        click.echo(f"reference latency: median {r.median_ms:.3f} ms "
                   f"({r.median_ms / lat.median_ms:.2f}x)")
    report = None
    if rdir is not None:
        from .report.collect import evaluate_report

        report = evaluate_report(res, model=model, reference=reference, threads=threads)
    rm = res.reference_metrics
    sys.exit(_gates_and_report(
        limits, report, rdir,
        score_before=rm.score if rm is not None else None,
        score_after=m.score if rm is not None else None, score_name=m.score_name,
        latency_before_ms=res.reference_latency.median_ms if res.reference_latency else None,
        latency_after_ms=lat.median_ms, size_bytes=Path(model).stat().st_size))


@main.command()
@_model_arg
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False),
              help="The best candidate; OUT.policy.json and OUT.log.jsonl are written beside.")
@click.option("--calib", required=True, type=click.Path(),
              help="Calibration data (see evaluate): half fits reconstruction, a quarter scores "
                   "the search, a quarter tests the result.")
@click.option("--flops", type=FINITE, help="Fraction of MACs to keep, in (0, 1).")
@click.option("--params", type=FINITE, help="Fraction of parameters to keep, in (0, 1).")
@click.option("--latency", type=FINITE, help="Fraction of latency to keep on --target, in (0, 1): "
              "candidates measured live (host, ssh) or predicted from a profile.")
@click.option("--target", default="host", show_default=True, metavar="TARGET",
              help="Where latency comes from: host (measure here), ssh://user@host[:port] "
                   "(measure on a device), PROFILE.json (from `onnx-amc profile`), or a "
                   "bundled profile NAME (names without a measured profile fall back to a "
                   "FLOPs/memory estimate, labelled as such).")
@click.option("--ep", "providers", metavar="PROVIDER[,PROVIDER]", help="ONNX Runtime execution "
              "providers for latency (default CPUExecutionProvider).")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Evaluate candidates in N Ray worker processes on this machine "
                   "(pip install 'onnx-amc[ray]'); the search runs rounds of N episodes.")
@click.option("--ray-address", default=None, metavar="auto|ray://HOST:PORT",
              help="Run the workers on an existing Ray cluster (needs --workers or --batch).")
@click.option("--batch", type=click.IntRange(min=1), default=None,
              help="Episodes per search round, evaluated together (default: --workers, else "
                   "1). Same seed and same batch: same result.")
@click.option("--profile-time", type=FiniteRange(min=1), default=120, show_default=True,
              help="--latency on host: seconds for the per-op profile the action wall uses.")
@click.option("--episodes", type=click.IntRange(min=1), help="Search episodes (default: 150 "
              "for up to 8 groups, else 300).")
@click.option("--warmup", type=click.IntRange(min=0), help="Episodes of random actions before "
              "the agent learns (default: a third of the episodes).")
@click.option("--search", type=click.Choice(["ddpg", "uniform", "random", "greedy"]),
              default="ddpg", show_default=True,
              help="AMC's DDPG agent, or a baseline under the same budget (greedy: AIMET's "
              "per-group sensitivity with one accuracy threshold; it ignores --episodes).")
@click.option("--reconstruct", is_flag=True, help="Least-squares reconstruction of every "
              "candidate (in the search loop, as AMC does) and of the result.")
@click.option("--score", "score_kind", type=click.Choice(list(SEARCH_SCORES)), default="auto",
              show_default=True, help="What the search maximises on its part of the calibration "
              "data. auto: top-1 with labels, else top-1 agreement with the original, else mean "
              "cosine; agreement+cosine: without labels, their mean (continuous where agreement "
              "on few samples ties); cosine: mean cosine of all outputs; likelihood: exp(-cross-"
              "entropy) of the labels, or of the original's top-1 classes without labels "
              "(continuous where top-1 on a few hundred samples ties). Gates and the report use auto's metric whatever is "
              "searched.")
@click.option("--fill-budget/--no-fill-budget", "fill", default=True, show_default=True,
              help="Raise every candidate's keep ratios until the budget is spent before it is "
              "scored (one common factor, then what rounding left). --no-fill-budget: the "
              "official AMC code's action wall alone, which only forbids going over; a short "
              "search then often ends under budget.")
@click.option("--lbound", type=FiniteRange(min=0, max=1, min_open=True), default=0.2,
              show_default=True, help="Lowest keep ratio the search may give a group (AMC's "
              "action range [lbound, 1]).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="ONNX Runtime threads.")
@click.option("--round-to", type=int, default=None,
              help=f"Round kept channel counts up to a multiple of N (default: the fast "
                   f"multiple measured in the --target profile, else {DEFAULT_ROUND_TO}).")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a "
              "terminal).")
@click.option("--resume", type=click.Path(), help="Continue an interrupted search: its "
              "OUT.log.jsonl (or the folder holding it). Finished episodes replay from the log "
              "without re-evaluation; settings must match.")
@_shape_opt
@calib_options
@gate_options
def compress(model: str, out: str, calib: str, flops: float | None, params: float | None,
             latency: float | None, target: str, providers: str | None,
             workers: int | None, ray_address: str | None, batch: int | None,
             profile_time: float,
             episodes: int | None, warmup: int | None, search: str, reconstruct: bool,
             score_kind: str, fill: bool, lbound: float, seed: int, threads: int,
             round_to: int,
             progress: bool | None, resume: str | None,
             input_shape: tuple[str, ...], calib_size, image_size, resize_shorter, scale, mean,
             std, bgr, layout, max_accuracy_drop, min_speedup, max_size, report_dir) -> None:
    """Search per-layer keep ratios with AMC under a budget and write the best model. With
    gates, exit 1 when one fails (the model and report are still written)."""
    from .compress import compress as run

    limits = _limits(max_accuracy_drop, min_speedup, max_size)
    rdir = _check_report_dir(report_dir)
    profile = target if target.endswith(".json") else None
    out_path = _check_output(model, out, ".policy.json", ".log.jsonl",
                             inputs=(calib, profile), report_dir=rdir)
    if limits.min_speedup is not None and not (target == "host" or target.startswith("ssh://")):
        raise InputError("--min-speedup is checked on measured latency: use --target host or "
                         "ssh://..., not a profile or name (predicted)")
    show = sys.stderr.isatty() if progress is None else progress
    log_path = out_path.with_name(out_path.name + ".log.jsonl")
    moved: Path | None = None
    if resume is not None and Path(resume).resolve() == log_path.resolve():
        # The new log replaces the old one: read it from beside, restore it on failure.
        moved = log_path.with_name(log_path.name + ".resumed")
        os.replace(log_path, moved)
        resume = str(moved)
    try:
        res = run(model, resume=resume, calib=calib, flops=flops, params=params,
                  latency=latency, target=target, profile_time_s=profile_time,
                  workers=workers, ray_address=ray_address, batch=batch,
                  providers=tuple(p for p in (providers or "").split(",") if p) or None,
                  episodes=episodes, warmup=warmup, search=search, reconstruct=reconstruct,
                  seed=seed, threads=threads, calib_size=calib_size,
                  image_options=_image_options(image_size, resize_shorter, scale, mean, std,
                                               bgr, layout),
                  input_shapes=_parse_shapes(input_shape), round_to=round_to, progress=show,
                  log_path=log_path, score=score_kind, fill=fill, lbound=lbound)
    except BaseException:
        if moved is not None and not log_path.exists():
            os.replace(moved, log_path)
        raise
    if moved is not None:
        os.remove(moved)
    _write(res.save, out_path)
    _print_compress(res, out_path)
    report = None
    if rdir is not None:
        from .report.collect import compress_report

        report = compress_report(res, model=model, output=out_path, threads=threads)
    b, af = res.metrics_before, res.metrics_after
    measured = res.latency_source == "measured"
    code = _gates_and_report(
        limits, report, rdir, score_before=b.score, score_after=af.score,
        score_name=b.score_name,
        latency_before_ms=_ms(res.latency_before) if measured else None,
        latency_after_ms=_ms(res.latency_after) if measured else None,
        size_bytes=out_path.stat().st_size)
    if res.interrupted:
        sys.exit(130)
    sys.exit(code)


def _ms(stats) -> float | None:
    """Median ms of LatencyStats, or a predicted number as is."""
    if stats is None:
        return None
    return float(stats) if isinstance(stats, int | float) else float(stats.median_ms)


def _budget_source(res) -> str:
    """Where a latency budget's "used" number comes from.  It is the action wall's cost, which
    for host and ssh targets is a prediction or estimate while the table below shows measured
    latencies: without this, the two numbers of one output disagree with no word why."""
    if res.budget_kind != "latency":
        return ""
    if res.latency_source == "estimated":
        return " (ESTIMATED from FLOPs/memory, NOT MEASURED)"
    if res.latency_source == "predicted":
        return f" (predicted from the profile '{res.target}')"
    lb, la = _ms(res.latency_before), _ms(res.latency_after)
    if lb and la:
        return f" as the action wall predicts it; measured: {la / lb:.4f}"
    return " as the action wall predicts it"


def _print_compress(res, out_path: Path) -> None:
    """The before/after table a person reads first (``res.warnings`` were logged on stderr
    when they arose, before the search; the report keeps them)."""
    b, af = res.metrics_before, res.metrics_after
    what = f"{res.episodes_run} episodes"
    if res.search == "greedy" and res.records:
        what = f"{res.records[0].get('probes', 0)} sensitivity probes and 1 candidate"
    click.echo(f"search: {res.search}, {what}, seed {res.seed}, "
               f"{res.seconds:.1f} s" + (" (interrupted: best so far)" if res.interrupted
                                         else ""))
    click.echo(f"budget: keep {res.budget_keep} of {res.budget_kind}; used "
               f"{res.budget_use:.4f}{_budget_source(res)}")
    if res.confirmed:
        click.echo(f"chosen on a second timing of the {len(res.confirmed)} best candidates "
                   f"(episode {res.chosen_episode}: "
                   + ", ".join(f"{c['latency_ms_search']:.3f} -> {c['latency_ms']:.3f} ms"
                               for c in res.confirmed if c["episode"] == res.chosen_episode)
                   + ")")
    rows = [("params", _human(res.params_before), _human(res.params_after),
             f"{res.params_after / res.params_before:.3f}x" if res.params_before else ""),
            ("MACs", _human(res.macs_before), _human(res.macs_after),
             f"{res.macs_after / res.macs_before:.3f}x" if res.macs_before else "")]
    lb, la = _ms(res.latency_before), _ms(res.latency_after)
    if lb is not None and la is not None:
        where = "this host" if res.target == "host" else res.target
        rows.append((f"latency ({res.latency_source}, {where})", f"{lb:.3f} ms",
                     f"{la:.3f} ms", f"{lb / la:.2f}x faster"))
    rows.append((f"test-part {b.score_name} ({af.num_samples} samples)", f"{b.score:.4f}",
                 f"{af.score:.4f}", f"{af.score - b.score:+.4f}"))
    w = max(len(r[0]) for r in rows)
    click.echo(f"  {'':<{w}}  {'before':>12}  {'after':>12}  change")
    for name, x, y, c in rows:
        click.echo(f"  {name:<{w}}  {x:>12}  {y:>12}  {c}")
    searched = b.score_name if res.score_kind == "auto" else res.score_kind
    click.echo(f"search-part {searched} of the best candidate: {res.search_score:.4f} "
               "(the test part above was never seen by the search)")
    click.echo(f"wrote {out_path}, {out_path.name}.policy.json, {out_path.name}.log.jsonl")


def _register_profile() -> None:
    from .targets.profile_cli import profile_command

    main.add_command(profile_command)


_register_profile()


if __name__ == "__main__":
    main()
