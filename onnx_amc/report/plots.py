"""The three report figures as PNG bytes, drawn with matplotlib's object API on Agg.

Only ``matplotlib.figure.Figure`` with an explicit ``FigureCanvasAgg`` is used (never pyplot),
so rendering a report neither needs a display nor changes the process-wide backend or rcParams
of a program that imports onnx_amc. Every function takes the cleaned report dict and returns
``None`` when it has nothing to draw (prune and evaluate have no episodes), so the HTML can
omit the figure instead of showing an empty frame.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..search.rewards import rank_key
from ..values import is_finite_number as _finite

__all__ = [
    "KERNEL_COLORS",
    "chosen_episode",
    "kernel_kind",
    "plot_candidates",
    "plot_keep_ratios",
    "plot_rewards",
    "render_plots",
]

# Colour-blind-safe palette (Okabe-Ito), one colour per kernel family.
KERNEL_COLORS: dict[str, str] = {
    "1x1": "#0072B2",
    "kxk": "#E69F00",
    "dw": "#009E73",
    "fc": "#CC79A7",
    "other": "#7F7F7F",
}
_PHASE_COLORS: dict[str, str] = {"warmup": "#9AA5B1", "agent": "#0072B2", "uniform": "#E69F00",
                                 "random": "#9AA5B1", "greedy": "#CC79A7"}
_CHOSEN_COLOR = "#D55E00"
_FROZEN_FACE = "#EEF0F3"
_FROZEN_EDGE = "#8A939E"
_DPI = 110
_RC = {
    "font.size": 9.5,
    "axes.titlesize": 11,
    "axes.titleweight": "bold",
    "axes.titlelocation": "left",
    "axes.labelsize": 9.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.edgecolor": "#5F6B7A",
    "axes.labelcolor": "#27313D",
    "xtick.color": "#27313D",
    "ytick.color": "#27313D",
    "axes.grid": True,
    "grid.color": "#E3E7EC",
    "grid.linewidth": 0.8,
    "legend.frameon": False,
    "legend.fontsize": 8.5,
    "hatch.linewidth": 0.8,
}

_KXK = re.compile(r"^(\d+)x(\d+)$")


def kernel_kind(kernel: str | None) -> str:
    """Colour family of a group's kernel label: ``1x1``, ``kxk``, ``dw``, ``fc`` or ``other``."""
    k = (kernel or "").strip().lower()
    if k.startswith("dw"):
        return "dw"
    if k in ("fc", "gemm", "matmul", "linear"):
        return "fc"
    m = _KXK.match(k)
    if m:
        return "1x1" if m.group(1) == m.group(2) == "1" else "kxk"
    return "other"


def _kind_label(kind: str, kernels: Sequence[str | None]) -> str:
    if kind == "kxk":
        sizes = sorted({(k or "").lower() for k in kernels if kernel_kind(k) == "kxk"})
        return (sizes[0].replace("x", "\u00d7") if len(sizes) == 1 else "k\u00d7k") + " conv"
    return {"1x1": "1\u00d71 conv", "dw": "depthwise conv", "fc": "fully connected",
            "other": "other / unknown"}[kind]


def group_ratio(group: Mapping[str, Any]) -> float | None:
    """Kept fraction of a group: kept/channels when both are known, else the keep ratio."""
    kept, channels = group.get("kept"), group.get("channels")
    if _finite(kept) and _finite(channels) and channels > 0:
        return float(kept) / float(channels)
    if _finite(group.get("keep")):
        return float(group["keep"])
    return 1.0 if group.get("frozen_reason") else None


def chosen_episode(report: Mapping[str, Any]) -> int | None:
    """The episode the search kept: ``search.chosen_episode`` if given, else what compress keeps
    (the first best by :func:`~onnx_amc.search.rewards.rank_key`)."""
    search = report.get("search") or {}
    if _finite(search.get("chosen_episode")):
        return int(search["chosen_episode"])
    eps = [ep for ep in report.get("episodes") or [] if _finite(ep.get("reward"))]
    if not eps:
        return None
    return int(max(eps, key=rank_key)["episode"])


def _figure(height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10.0, height), dpi=_DPI)
    FigureCanvasAgg(fig)
    # Fixed margins instead of a layout engine: the three figures stack in the HTML and their
    # plot areas line up, whatever the width of each legend.
    fig.subplots_adjust(left=0.085, right=0.765, top=1 - 0.32 / height, bottom=0.5 / height)
    return fig


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    # No "Software" text chunk: the PNG (and so the HTML) is then byte-identical across runs
    # for the same data and carries no URL.
    fig.savefig(buf, format="png", dpi=_DPI, facecolor="white", metadata={"Software": None})
    return buf.getvalue()


def _draw(height: float, body: Callable[[Any], None]) -> bytes:
    import matplotlib

    with matplotlib.rc_context(_RC):
        fig = _figure(height)
        body(fig)
        _fit_left(fig)
        return _png(fig)


def _fit_left(fig: Any) -> None:
    """Widen the left margin when long tick labels push the y label out of the image (the
    fixed margin keeps the three figures aligned in the common case)."""
    fig.canvas.draw()
    x0 = min(ax.yaxis.label.get_window_extent().x0 for ax in fig.axes)
    if x0 < 4:
        shift = (4 - x0) / (fig.get_figwidth() * fig.dpi)
        fig.subplots_adjust(left=fig.subplotpars.left + shift)


def plot_keep_ratios(report: Mapping[str, Any]) -> bytes | None:
    """Per-group kept fraction in network order, coloured by kernel family, frozen groups hatched
    at 1.0 (the AMC paper's per-layer policy figure)."""
    groups = [g for g in report.get("groups") or [] if group_ratio(g) is not None]
    if not groups:
        return None
    groups.sort(key=lambda g: g.get("index", 0))

    def body(fig: Any) -> None:
        from matplotlib.patches import Patch

        ax = fig.add_subplot()
        n = len(groups)
        xs = list(range(n))
        kernels = [g.get("kernel") for g in groups]
        kinds_seen: list[str] = []
        for x, g in zip(xs, groups, strict=True):
            frozen = bool(g.get("frozen_reason"))
            ratio = 1.0 if frozen else group_ratio(g)
            kind = kernel_kind(g.get("kernel"))
            if frozen:
                ax.bar(x, ratio, width=0.78, color=_FROZEN_FACE, edgecolor=_FROZEN_EDGE,
                       hatch="////", linewidth=0.8, zorder=2)
            else:
                ax.bar(x, ratio, width=0.78, color=KERNEL_COLORS[kind], zorder=2)
                if kind not in kinds_seen:
                    kinds_seen.append(kind)
            if n <= 48 and _finite(g.get("channels")):
                kept = g.get("kept") if _finite(g.get("kept")) else round(ratio * g["channels"])
                label = f"{int(kept)}/{int(g['channels'])}"
                if n <= 20:
                    ax.text(x, ratio + 0.015, label, ha="center", va="bottom", fontsize=7.5,
                            color="#27313D")
                else:
                    ax.text(x, ratio + 0.015, label, ha="center", va="bottom", fontsize=6.5,
                            rotation=90, color="#27313D")
        ax.set_xlim(-0.6, n - 0.4)
        ax.set_ylim(0, 1.22 if n <= 20 else 1.32)
        ax.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
        ax.grid(axis="x", visible=False)
        step = max(1, math.ceil(n / 40))
        ax.set_xticks(xs[::step], [str(g.get("index", i)) for i, g in enumerate(groups)][::step])
        ax.set_xlabel("channel group, in network order (input \u2192 output)")
        ax.set_ylabel("channels kept (fraction)")
        ax.set_title("Per-group keep ratio")
        order = [k for k in KERNEL_COLORS if k in kinds_seen]
        handles = [Patch(color=KERNEL_COLORS[k], label=_kind_label(k, kernels)) for k in order]
        if any(g.get("frozen_reason") for g in groups):
            handles.append(Patch(facecolor=_FROZEN_FACE, edgecolor=_FROZEN_EDGE, hatch="////",
                                 label="frozen (never pruned)"))
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0))

    return _draw(3.7, body)


def _episodes_with(report: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    return [e for e in report.get("episodes") or [] if _finite(e.get(key))]


def _shade_warmup(ax: Any, report: Mapping[str, Any]) -> None:
    """Shade the agent's warm-up; random search marks all its episodes "warmup" and has none."""
    if (report.get("search") or {}).get("method", "ddpg") != "ddpg":
        return
    warm = [int(e["episode"]) for e in report.get("episodes") or [] if e.get("phase") == "warmup"]
    if warm:
        ax.axvspan(min(warm) - 0.5, max(warm) + 0.5, color="#F1F3F6", zorder=0,
                   label="warm-up (random exploration)")


def plot_rewards(report: Mapping[str, Any]) -> bytes | None:
    """Reward of every episode and the best-so-far curve, warm-up episodes shaded."""
    eps = sorted(_episodes_with(report, "reward"), key=lambda e: e["episode"])
    if not eps:
        return None
    chosen = chosen_episode(report)

    def body(fig: Any) -> None:
        ax = fig.add_subplot()
        _shade_warmup(ax, report)
        xs = [int(e["episode"]) for e in eps]
        ys = [float(e["reward"]) for e in eps]
        ax.plot(xs, ys, color="#B8C2CC", linewidth=0.9, zorder=2)
        size = 16 if len(eps) <= 120 else 7
        for phase in dict.fromkeys(e.get("phase") for e in eps):
            pts = [(x, y) for x, y, e in zip(xs, ys, eps, strict=True) if e.get("phase") == phase]
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=size, zorder=3,
                       color=_PHASE_COLORS.get(str(phase), "#555555"),
                       label=f"reward ({phase})")
        best, run = [], -math.inf
        for y in ys:
            run = max(run, y)
            best.append(run)
        ax.step(xs, best, where="post", color="#111827", linewidth=1.8, zorder=4,
                label="best so far")
        if chosen is not None and chosen in xs:
            y = ys[xs.index(chosen)]
            ax.scatter([chosen], [y], marker="*", s=170, color=_CHOSEN_COLOR, zorder=5,
                       edgecolor="white", linewidth=0.6, label=f"chosen (episode {chosen})")
        lo, hi = min(ys), max(ys)
        pad = (hi - lo) * 0.08 or 0.01
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_xlim(min(xs) - 0.5, max(xs) + 0.5)
        ax.set_xlabel("episode")
        ax.set_ylabel("reward")
        ax.set_title("Search progress")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))

    return _draw(3.4, body)


def plot_candidates(report: Mapping[str, Any]) -> bytes | None:
    """Score of every evaluated candidate against its latency (or its budget use when no
    latency was measured), the chosen one marked."""
    eps = _episodes_with(report, "score")
    with_latency = [e for e in eps if _finite(e.get("latency_ms"))]
    if with_latency:
        xkey, pts = "latency_ms", with_latency
    else:
        xkey, pts = "budget_use", [e for e in eps if _finite(e.get("budget_use"))]
    if not pts:
        return None
    budget = report.get("budget") or {}
    before = report.get("before") or {}
    kind = (before.get("metrics") or {}).get("kind") or "score"
    chosen = chosen_episode(report)

    def body(fig: Any) -> None:
        ax = fig.add_subplot()
        size = 22 if len(pts) <= 120 else 9
        for phase in dict.fromkeys(e.get("phase") for e in pts):
            sel = [e for e in pts if e.get("phase") == phase]
            ax.scatter([e[xkey] for e in sel], [e["score"] for e in sel], s=size, alpha=0.75,
                       color=_PHASE_COLORS.get(str(phase), "#555555"), zorder=3,
                       edgecolor="white", linewidth=0.4, label=f"candidate ({phase})")
        if xkey == "budget_use":
            ax.set_xlabel(f"{_budget_word(budget.get('kind'))} kept (fraction of original)")
            if _finite(budget.get("keep")):
                ax.axvline(budget["keep"], color="#4B5563", linestyle="--", linewidth=1.1,
                           zorder=2, label=f"budget ({budget['keep']:g})")
        else:
            ax.set_xlabel("latency (ms, median)")
            _latency_references(ax, [float(e[xkey]) for e in pts], before, budget)
        chosen_pts = [e for e in pts if int(e["episode"]) == chosen]
        if chosen_pts:
            e = chosen_pts[0]
            ax.scatter([e[xkey]], [e["score"]], marker="*", s=260, color=_CHOSEN_COLOR,
                       edgecolor="white", linewidth=0.7, zorder=5,
                       label=f"chosen (episode {chosen})")
        ax.margins(x=0.04, y=0.1)
        ax.set_ylabel(f"{kind} on the search split" if kind != "score" else "score")
        ax.set_title("Candidates evaluated")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))

    return _draw(3.6, body)


def _latency_references(ax: Any, xs: Sequence[float], before: Mapping[str, Any],
                        budget: Mapping[str, Any]) -> None:
    """Dashed lines at the original latency (and the latency budget), but only when they do not
    squeeze the candidates into a sliver of the axis; otherwise a legend entry gives the value."""
    lat = (before.get("latency") or {}).get("median_ms")
    if not _finite(lat):
        return
    refs = [(float(lat), f"original ({lat:.3g} ms)", "--")]
    if budget.get("kind") == "latency" and _finite(budget.get("keep")):
        refs.append((float(lat) * budget["keep"], f"budget ({lat * budget['keep']:.3g} ms)", ":"))
    lo, hi = min(xs), max(xs)
    span = max(hi - lo, 0.05 * hi, 1e-9)
    for x, label, style in refs:
        if lo - 0.5 * span <= x <= hi + 0.5 * span:
            ax.axvline(x, color="#4B5563", linestyle=style, linewidth=1.1, zorder=2, label=label)
        else:
            arrow = "\u2192" if x > hi else "\u2190"
            ax.plot([], [], linestyle="none", label=f"{label} {arrow}")


def _budget_word(kind: Any) -> str:
    return {"macs": "MACs", "params": "parameters", "latency": "latency"}.get(str(kind), "budget")


def render_plots(report: Mapping[str, Any]) -> list[tuple[str, str, bytes]]:
    """``(key, caption, png)`` for every figure that has data, in display order."""
    figures = (
        ("keep_ratios", "Fraction of channels kept in each channel group, in network order "
         "(kept/total above each bar). Hatched bars are frozen groups that are never pruned.",
         plot_keep_ratios),
        ("rewards", "Reward of each search episode and the best reward so far. The shaded "
         "episodes are the warm-up, where the agent explores with random actions.",
         plot_rewards),
        ("candidates", "Every candidate the search evaluated; the star is the one written to "
         "the output.", plot_candidates),
    )
    out: list[tuple[str, str, bytes]] = []
    for key, caption, fn in figures:
        png = fn(report)
        if png is not None:
            out.append((key, caption, png))
    return out
