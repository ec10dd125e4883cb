"""``onnx-amc profile``: measure a latency profile on the device that will run the model.

Registered by ``onnx_amc.cli`` (``main.add_command(profile_command)``); its group turns
``InputError`` into one stderr line and exit code 2.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from onnx_amc.cli_types import FiniteRange, check_outputs, input_files
from onnx_amc.errors import InputError

__all__ = ["profile_command"]

log = logging.getLogger("onnx_amc")


def _summary(prof: dict, out: Path) -> list[str]:
    dev = prof["device"]
    lines = [
        f"profile: {out}",
        f"device: {dev['cpu']} ({dev['machine']}, {dev['cores']} cores), onnxruntime "
        f"{dev['onnxruntime']}, {dev['threads']} thread(s), {', '.join(dev['providers'])}",
    ]
    if prof["kind"] == "model":
        m, c = prof["model"], prof["correction"]
        n = sum(len(u["samples"]) for u in prof["units"])
        lines.append(f"model: {m.get('name') or '?'}: {m['units']} units, {n} measured "
                     f"samples from {m['designs']} pruned designs")
        pts = c["points"]
        knots = c.get("knots", ())
        lines.append(f"correction: {len(pts)} whole-model measurements (original "
                     f"{pts[0]['measured_ms']:.3f} ms)" + (
                         f", predicted through {len(knots)} knots; least-squares line for "
                         "reading" if knots else "") +
                     f": measured = {c['a_ms']:.4f} ms + {c['b']:.4f} x sum of units")
        # The line's error on its own points: how much the relation bends (with knots, the
        # prediction passes through the points, up to the monotone pooling).
        errs = [abs((c["a_ms"] + c["b"] * p["sum_units_ms"]) / p["measured_ms"] - 1)
                for p in pts if p["measured_ms"] > 0]
        if errs:
            lines.append(f"line's error on those: median {100 * sorted(errs)[len(errs) // 2]:.1f}%,"
                         f" max {100 * max(errs):.1f}%")
    else:
        lines.append(f"generic grid: {len(prof['samples'])} measured shapes; fits per kind: "
                     + ", ".join(sorted(prof["fits"])))
    hint = prof.get("round_to_hint") or {}
    if hint:
        lines.append(f"round_to hint: {hint['round_to']} (fastest channel multiple measured)")
    lines.append(f"built in {prof['build_seconds']:.0f} s")
    return lines


@click.command("profile")
@click.option("--model", "model", type=click.Path(dir_okay=False), default=None,
              help="Model to profile (default: a generic grid of common shapes).")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False),
              help="Where to write the profile JSON.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="ONNX Runtime intra-op threads (use what deployment will use).")
@click.option("--ep", "ep", default="CPUExecutionProvider", show_default=True,
              help="ONNX Runtime execution provider(s), e.g. xnnpack (CPU is the fallback).")
@click.option("--time-budget", "time_budget", type=FiniteRange(min=0, min_open=True),
              default=600.0, show_default=True, help="Soft cap in seconds.")
@click.option("--round-to", "round_to", type=int, default=8, show_default=True,
              help="Keep counts the search will use are multiples of this.")
@click.option("--input-shape", "input_shape", multiple=True,
              help="Pin dynamic input dims: NAME=D1,D2,...")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a "
              "terminal).")
def profile_command(model: str | None, out: str, threads: int, ep: str, time_budget: float,
                    round_to: int, input_shape: tuple[str, ...], seed: int,
                    progress: bool | None) -> None:
    """Measure per-op latency on this device into PROFILE.json, for --target PROFILE.json."""
    from onnx_amc.cli import _parse_shapes  # reuse the CLI's parsing and messages

    from .predict import save_profile
    from .profile import build_profile

    out_path = Path(out)
    if model is not None and not Path(model).is_file():
        raise InputError(f"model '{model}' does not exist")
    check_outputs([out_path], input_files(model))  # folder, writability, not the model
    if round_to < 1:
        raise InputError(f"--round-to must be >= 1, got {round_to}")
    shapes = _parse_shapes(input_shape)
    from onnx_amc.latency import resolve_providers

    providers = list(resolve_providers(ep))
    prof = build_profile(model, threads=threads, providers=providers, time_budget_s=time_budget,
                         round_to=round_to, input_shapes=shapes or None,
                         progress=sys.stderr.isatty() if progress is None else progress,
                         seed=seed, name=Path(model).name if model else None)
    save_profile(prof, out_path)
    for line in _summary(prof, out_path):
        click.echo(line)
