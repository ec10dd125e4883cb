"""report.md and report.html from a cleaned report dict (pure string functions).

Both documents are built from the same table rows (:func:`summary_rows`, :func:`gate_rows`,
...), so a number shown in a pull request is the number in the HTML. The HTML is one file
with inline CSS and the figures as ``data:`` URIs: it opens from a CI artifact, an e-mail or
an air-gapped machine without fetching anything.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from typing import Any

from ..values import is_finite_number as _num

__all__ = [
    "MD_GROUP_ROWS",
    "gate_rows",
    "group_rows",
    "render_html",
    "render_markdown",
    "summary_rows",
]

MD_GROUP_ROWS = 24  # report.md stays short enough to read in a pull request

Row = tuple[str, str, str, str]  # label, before, after, change


# --------------------------------------------------------------------------- formatting


def fmt_int(x: Any) -> str:
    return f"{int(x):,}" if _num(x) else "n/a"


def fmt_bytes(x: Any) -> str:
    """Decimal units (kB = 1000 B, MB = 10^6 B), as ``--max-size MB`` counts them."""
    if not _num(x):
        return "n/a"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if x >= scale:
            return f"{x / scale:.2f} {unit}"
    return f"{int(x)} B"


def fmt_ms(x: Any) -> str:
    if not _num(x):
        return "n/a"
    return f"{x:.3f}" if x < 100 else f"{x:.1f}"


def fmt_metric(x: Any) -> str:
    return f"{x:.4f}" if _num(x) else "n/a"


def _ratio(before: Any, after: Any) -> str:
    """after/before and the relative change, e.g. ``×0.370 (−63.0%)``."""
    if not (_num(before) and _num(after)) or before == 0:
        return ""
    r = after / before
    return f"\u00d7{r:.3f} ({(r - 1) * 100:+.1f}%)".replace("-", "\u2212")


def _speedup(before: Any, after: Any) -> str:
    if not (_num(before) and _num(after)) or after <= 0:
        return ""
    s = before / after
    return f"{s:.2f}\u00d7 faster" if s >= 1 else f"{1 / s:.2f}\u00d7 slower"


def _signed(x: float) -> str:
    """``+0.0123`` / ``\u22120.0123``, and ``\u00b10.0000`` when it rounds to zero (no ``-0.0000``)."""
    if round(x, 4) == 0:
        return "\u00b10.0000"
    return f"{x:+.4f}".replace("-", "\u2212")


def _delta(before: Any, after: Any) -> str:
    if not (_num(before) and _num(after)):
        return ""
    return _signed(after - before)


def _latency(lat: Mapping[str, Any] | None) -> str:
    if not lat or not _num(lat.get("median_ms")):
        return "n/a"
    text = fmt_ms(lat["median_ms"])
    if _num(lat.get("iqr_ms")):
        text += f" \u00b1 {fmt_ms(lat['iqr_ms'])}"
    return f"{text} ms ({lat.get('source') or 'unknown'})"


_METRIC_ROWS = (
    ("top1", "top-1 accuracy"),
    ("top5", "top-5 accuracy"),
    ("agreement", "top-1 agreement with reference"),
    ("cosine", "cosine similarity to reference"),
    ("rel_l2", "relative L2 error to reference"),
)


def _side(report: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    return report.get(key) or {}


def summary_rows(report: Mapping[str, Any]) -> list[Row]:
    """The before/after table: params, MACs, size, latency, then each metric present."""
    b, a = _side(report, "before"), _side(report, "after")
    rows: list[Row] = [
        ("parameters", fmt_int(b.get("params")), fmt_int(a.get("params")) if a else "",
         _ratio(b.get("params"), a.get("params"))),
        ("MACs", fmt_int(b.get("macs")), fmt_int(a.get("macs")) if a else "",
         _ratio(b.get("macs"), a.get("macs"))),
        ("model size", fmt_bytes(b.get("size_bytes")), fmt_bytes(a.get("size_bytes")) if a else "",
         _ratio(b.get("size_bytes"), a.get("size_bytes"))),
    ]
    blat, alat = b.get("latency") or {}, a.get("latency") or {}
    if blat or alat:
        rows.append(("latency (median \u00b1 IQR)", _latency(blat), _latency(alat) if a else "",
                     _speedup(blat.get("median_ms"), alat.get("median_ms"))))
    bm, am = b.get("metrics") or {}, a.get("metrics") or {}
    samples = bm.get("samples") or am.get("samples")
    suffix = f" ({samples:,} samples)" if _num(samples) else ""
    shown = False
    for key, label in _METRIC_ROWS:
        if _num(bm.get(key)) or _num(am.get(key)):
            rows.append((label + suffix, fmt_metric(bm.get(key)),
                         fmt_metric(am.get(key)) if a else "", _delta(bm.get(key), am.get(key))))
            shown = True
    if not shown and (_num(bm.get("score")) or _num(am.get("score"))):
        kind = bm.get("kind") or am.get("kind") or "score"
        rows.append((f"{kind} score{suffix}", fmt_metric(bm.get("score")),
                     fmt_metric(am.get("score")) if a else "",
                     _delta(bm.get("score"), am.get("score"))))
    return rows


def gate_rows(report: Mapping[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """name, limit, value, PASS/FAIL, message for every gate."""
    rows = []
    for g in report.get("gates") or []:
        value = g.get("value")
        rows.append((str(g.get("name", "")), f"{g.get('limit'):g}" if _num(g.get("limit")) else "n/a",
                     f"{value:.4g}" if _num(value) else "n/a",
                     "PASS" if g.get("passed") else "FAIL", str(g.get("message") or "")))
    return rows


def group_rows(report: Mapping[str, Any]) -> list[tuple[str, str, str, str, str, str]]:
    """index, id, kernel, channels, kept, keep-or-frozen-reason for every group, in order."""
    rows = []
    for g in sorted(report.get("groups") or [], key=lambda g: g.get("index", 0)):
        channels = g.get("channels")
        kept = g.get("kept")
        if g.get("frozen_reason"):
            keep = f"frozen: {g['frozen_reason']}"
            kept = channels if kept is None else kept
        elif _num(g.get("keep")):
            keep = f"{g['keep']:.3f}"
        else:
            keep = "n/a"
        rows.append((str(g.get("index", "")), str(g.get("id", "")), str(g.get("kernel") or ""),
                     fmt_int(channels), fmt_int(kept) if kept is not None else "n/a", keep))
    return rows


def _group_summary(report: Mapping[str, Any]) -> str:
    groups = report.get("groups") or []
    if not groups:
        return ""
    frozen = sum(1 for g in groups if g.get("frozen_reason"))
    ratios = [
        g["kept"] / g["channels"] if _num(g.get("kept")) and _num(g.get("channels")) and g["channels"]
        else g.get("keep")
        for g in groups if not g.get("frozen_reason")
    ]
    ratios = sorted(r for r in ratios if _num(r))
    pruned = sum(1 for r in ratios if r < 1)
    text = f"{len(groups)} groups: {pruned} pruned, {frozen} frozen"
    if ratios:
        mid = ratios[len(ratios) // 2] if len(ratios) % 2 else \
            (ratios[len(ratios) // 2 - 1] + ratios[len(ratios) // 2]) / 2
        text += f"; keep ratio min {ratios[0]:.3f}, median {mid:.3f}, max {ratios[-1]:.3f}"
    return text


def _budget_text(report: Mapping[str, Any]) -> str:
    b = report.get("budget")
    if not b:
        return ""
    kind = {"macs": "MACs", "params": "parameters", "latency": "latency"}.get(b.get("kind"),
                                                                             str(b.get("kind")))
    text = f"{kind}: keep {b['keep']:g} of the original"
    if _num(b.get("use")):
        text += f", chosen policy uses {b['use']:.4f}"
    return text


def _search_items(report: Mapping[str, Any]) -> list[tuple[str, str]]:
    s = report.get("search")
    if not s:
        return []
    from .plots import chosen_episode

    items = [
        ("method", str(s.get("method"))),
        ("seed", str(s.get("seed"))),
        ("episodes", f"{s.get('episodes')} ({s.get('warmup')} warm-up)"),
        ("least-squares reconstruction", "yes" if s.get("reconstruct") else "no"),
        ("channel rounding", f"multiples of {s.get('round_to')}"),
        ("time", f"{s['seconds']:.1f} s" if _num(s.get("seconds")) else "n/a"),
        ("interrupted", "yes (best candidate so far kept)" if s.get("interrupted") else "no"),
    ]
    chosen = chosen_episode(report)
    if chosen is not None:
        ep = next((e for e in report.get("episodes") or [] if e.get("episode") == chosen), {})
        detail = ", ".join(
            f"{k.replace('_', ' ')} {_signed(ep[k]) if k == 'reward' else f'{ep[k]:.4f}'}"
            for k in ("reward", "score", "budget_use") if _num(ep.get(k)))
        items.append(("chosen candidate", f"episode {chosen}" + (f" ({detail})" if detail else "")))
    return items


def _device_text(report: Mapping[str, Any]) -> str:
    d = report.get("device") or {}
    if not d:
        return ""
    parts = [str(d.get("target") or "")]
    if d.get("cpu"):
        parts.append(str(d["cpu"]))
    if _num(d.get("cores")):
        parts.append(f"{d['cores']} cores")
    if _num(d.get("threads")):
        parts.append(f"{d['threads']} thread" + ("s" if d["threads"] != 1 else ""))
    if d.get("provider"):
        parts.append(str(d["provider"]))
    if d.get("onnxruntime"):
        parts.append(f"onnxruntime {d['onnxruntime']}")
    return " \u00b7 ".join(p for p in parts if p)


def _latency_notes(report: Mapping[str, Any]) -> list[str]:
    notes = []
    for key in ("before", "after"):
        lat = _side(report, key).get("latency") or {}
        if not lat:
            continue
        bits = [str(lat.get("source") or "unknown")]
        if _num(lat.get("runs")):
            bits.append(f"{lat['runs']} runs")
        if _num(lat.get("threads")):
            bits.append(f"{lat['threads']} thread" + ("s" if lat["threads"] != 1 else ""))
        if lat.get("detail"):
            bits.append(str(lat["detail"]))
        name = key if report.get("after") else "model"
        notes.append(f"{name}: " + ", ".join(bits))
    return notes


def _measured_text(report: Mapping[str, Any]) -> str:
    m = report.get("measured") or {}
    return "; ".join(f"{k} {v}" for k, v in m.items() if v) or "n/a"


def _files(report: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    rows = []
    for key in ("input", "output"):
        f = report.get(key)
        if f:
            rows.append((key, str(f.get("path", "")), str(f.get("sha256", "")),
                         fmt_int(f.get("bytes")) + " B"))
    return rows


def _interrupted_text(report: Mapping[str, Any]) -> str:
    s = report.get("search") or {}
    if not s.get("interrupted"):
        return ""
    return "Search interrupted: the output is the best candidate found before the stop."


def _status_word(report: Mapping[str, Any]) -> str:
    return {"PASS": "PASS", "FAIL": "FAIL"}.get(report.get("status"), "no gates")


def _failed_messages(report: Mapping[str, Any]) -> list[str]:
    return [str(g.get("message") or g.get("name")) for g in report.get("gates") or []
            if not g.get("passed")]


# --------------------------------------------------------------------------- markdown


class _Code(str):
    """A Markdown cell shown as inline code (ids, paths, hashes): no escaping but pipes."""


def _md(text: Any) -> str:
    """Escape what would break a GitHub table cell or start markup."""
    s = " ".join(str(text).split())
    if isinstance(text, _Code):
        fence = "``" if "`" in s else "`"
        pad = " " if fence == "``" else ""
        return f"{fence}{pad}{s.replace('|', chr(92) + '|')}{pad}{fence}"
    for ch in ("\\", "|", "*", "_", "`", "<", ">", "[", "]"):
        s = s.replace(ch, "\\" + ch)
    return s


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]],
              align: Sequence[str] | None = None) -> list[str]:
    align = align or ["l"] * len(header)
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(_md(h) for h in header) + " |", "|" + "|".join(sep) + "|"]
    lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]
    return lines


def render_markdown(report: Mapping[str, Any]) -> str:
    """report.md: the summary a reviewer reads in a pull request (no images)."""
    status = _status_word(report)
    lines = [f"# onnx-amc {report.get('command')}: {status}", ""]
    for msg in _failed_messages(report):
        lines.append(f"> **FAIL**: {_md(msg)}")
    if _failed_messages(report):
        lines.append("")
    if _interrupted_text(report):
        lines += [f"> {_interrupted_text(report)}", ""]
    inp, out = report.get("input") or {}, report.get("output") or {}
    head = _md(_Code(inp.get("path", "?"))) + (f" \u2192 {_md(_Code(out['path']))}" if out else "")
    lines += [f"{head} \u00b7 {report.get('created', '')}", ""]
    device = _device_text(report)
    if device:
        lines += [f"Device: {_md(device)}", ""]

    has_after = bool(report.get("after"))
    rows = summary_rows(report)
    if has_after:
        lines += _md_table(["", "before", "after", "change"], rows, ["l", "r", "r", "r"])
    else:
        lines += _md_table(["", "model"], [(r[0], r[1]) for r in rows], ["l", "r"])
    notes = _latency_notes(report)
    if notes:
        lines += ["", "Latency: " + _md("; ".join(notes))]
    lines += ["", f"Numbers: {_md(_measured_text(report))}.", ""]

    gates = gate_rows(report)
    lines += ["## Gates", ""]
    if gates:
        lines += _md_table(["gate", "limit", "value", "result", "message"], gates,
                           ["l", "r", "r", "l", "l"])
    else:
        lines.append("No gates were set (status NONE).")
    lines.append("")

    budget, search = _budget_text(report), _search_items(report)
    if budget or search:
        lines += ["## Budget and search", ""]
        if budget:
            lines.append(f"- budget: {_md(budget)}")
        lines += [f"- {k}: {_md(v)}" for k, v in search]
        lines.append("")

    groups = group_rows(report)
    if groups:
        lines += ["## Per-group keep ratios", "", _md(_group_summary(report)), ""]
        shown = [(g[0], _Code(g[1]), *g[2:]) for g in groups[:MD_GROUP_ROWS]]
        lines += _md_table(["#", "group", "kernel", "channels", "kept", "keep"], shown,
                           ["r", "l", "l", "r", "r", "l"])
        if len(groups) > MD_GROUP_ROWS:
            lines += ["", f"... {len(groups) - MD_GROUP_ROWS} more groups in report.json."]
        lines.append("")

    lines += ["## Provenance", ""]
    files = [(k, _Code(p), _Code(h), size) for k, p, h, size in _files(report)]
    lines += _md_table(["file", "path", "sha256", "size"], files, ["l", "l", "l", "r"])
    versions = report.get("versions") or {}
    lines += ["", "Versions: " + ", ".join(f"{_md(k)} {_md(v)}" for k, v in versions.items()), ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- html

_CSS = """
:root { --ink:#1f2933; --muted:#5f6b7a; --line:#e3e7ec; --bg:#f6f7f9; --pass:#15803d;
        --fail:#b91c1c; --none:#6b7280; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
       font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif; }
main { max-width:1180px; margin:0 auto; padding:28px 32px 48px; }
header { display:flex; align-items:center; gap:24px; background:#fff; border:1px solid var(--line);
         border-radius:12px; padding:20px 24px; }
.badge { flex:none; min-width:150px; text-align:center; font-weight:800; font-size:34px;
         letter-spacing:.06em; color:#fff; border-radius:10px; padding:14px 22px; }
.badge.PASS { background:var(--pass); } .badge.FAIL { background:var(--fail); }
.badge.NONE { background:var(--none); font-size:22px; padding:20px 22px; }
header h1 { margin:0 0 4px; font-size:24px; }
header .sub { color:var(--muted); font-size:13.5px; overflow-wrap:anywhere; }
.warn { margin:6px 0 0; color:#92400e; font-weight:600; }
.failmsg { margin:6px 0 0; color:var(--fail); font-weight:600; }
.cards { display:grid; grid-template-columns:repeat(auto-fit,minmax(200px,1fr)); gap:14px;
         margin:18px 0 0; }
.card { background:#fff; border:1px solid var(--line); border-radius:12px; padding:14px 18px; }
.card .k { color:var(--muted); font-size:12.5px; text-transform:uppercase; letter-spacing:.05em; }
.card .v { font-size:26px; font-weight:700; margin-top:2px; }
.card .d { color:var(--muted); font-size:13px; }
section { background:#fff; border:1px solid var(--line); border-radius:12px; padding:18px 24px;
          margin-top:18px; }
h2 { font-size:18px; margin:0 0 12px; }
table { border-collapse:collapse; width:100%; font-size:14px; }
th, td { padding:7px 10px; border-bottom:1px solid var(--line); text-align:left;
         vertical-align:top; }
th { color:var(--muted); font-weight:600; font-size:12.5px; text-transform:uppercase;
     letter-spacing:.04em; }
td.r, th.r { text-align:right; font-variant-numeric:tabular-nums; white-space:nowrap; }
td.id { font-family:ui-monospace,"DejaVu Sans Mono",monospace; font-size:12.5px;
        word-break:break-all; }
tr.fail td { background:#fef2f2; } tr.frozen td { color:var(--muted); }
.pill { display:inline-block; padding:1px 9px; border-radius:999px; font-size:12px;
        font-weight:700; color:#fff; }
.pill.PASS { background:var(--pass); } .pill.FAIL { background:var(--fail); }
.note { color:var(--muted); font-size:13px; margin:10px 0 0; }
figure { margin:0 0 18px; } figure:last-child { margin-bottom:0; }
figure img { display:block; width:100%; height:auto; border-radius:6px; }
figcaption { color:var(--muted); font-size:13px; margin-top:4px; }
dl { display:grid; grid-template-columns:max-content 1fr; gap:4px 18px; margin:0; font-size:14px; }
dt { color:var(--muted); } dd { margin:0; }
details summary { cursor:pointer; color:var(--muted); margin:8px 0; }
code { font-family:ui-monospace,"DejaVu Sans Mono",monospace; font-size:12.5px; word-break:break-all; }
"""


class _Raw(str):
    """Already-escaped HTML for a table cell; plain ``str`` cells are always escaped."""


def _e(text: Any) -> str:
    if isinstance(text, _Raw):
        return str(text)
    return html.escape(str(text), quote=True)


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = (),
                row_class: Sequence[str] | None = None, cell_class: Mapping[int, str] | None = None
                ) -> str:
    cell_class = dict(cell_class or {})
    for i in right:
        cell_class[i] = "r"

    def cls(i: int) -> str:
        return f' class="{cell_class[i]}"' if i in cell_class else ""

    out = ["<table><thead><tr>"]
    out += [f"<th{cls(i)}>{_e(h)}</th>" for i, h in enumerate(header)]
    out.append("</tr></thead><tbody>")
    for n, row in enumerate(rows):
        rc = row_class[n] if row_class else ""
        out.append(f'<tr class="{rc}">' if rc else "<tr>")
        out += [f"<td{cls(i)}>{_e(c)}</td>" for i, c in enumerate(row)]
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _cards(report: Mapping[str, Any]) -> str:
    b, a = _side(report, "before"), _side(report, "after")
    cards: list[tuple[str, str, str]] = []
    if a:
        for key, label in (("params", "parameters"), ("macs", "MACs")):
            if _num(b.get(key)) and _num(a.get(key)) and b[key]:
                cards.append((label, f"\u00d7{a[key] / b[key]:.2f}",
                              f"{fmt_int(b[key])} \u2192 {fmt_int(a[key])}"))
        blat, alat = b.get("latency") or {}, a.get("latency") or {}
        if _num(blat.get("median_ms")) and _num(alat.get("median_ms")) and alat["median_ms"] > 0:
            cards.append((f"latency ({alat.get('source') or 'unknown'})",
                          _speedup(blat["median_ms"], alat["median_ms"]),
                          f"{fmt_ms(blat['median_ms'])} \u2192 {fmt_ms(alat['median_ms'])} ms"))
        bm, am = b.get("metrics") or {}, a.get("metrics") or {}
        if _num(bm.get("score")) and _num(am.get("score")):
            cards.append((f"{bm.get('kind') or 'score'}", _delta(bm["score"], am["score"]),
                          f"{fmt_metric(bm['score'])} \u2192 {fmt_metric(am['score'])}"))
    else:
        cards.append(("parameters", fmt_int(b.get("params")), "counted"))
        if _num(b.get("macs")):
            cards.append(("MACs", fmt_int(b.get("macs")), "counted"))
        lat = b.get("latency") or {}
        if _num(lat.get("median_ms")):
            cards.append(("latency", f"{fmt_ms(lat['median_ms'])} ms",
                          f"median, {lat.get('source') or 'unknown'}"))
        bm = b.get("metrics") or {}
        if _num(bm.get("score")):
            cards.append((f"{bm.get('kind') or 'score'}", fmt_metric(bm["score"]),
                          f"{bm.get('samples', 0):,} samples"))
    return '<div class="cards">' + "".join(
        f'<div class="card"><div class="k">{_e(k)}</div><div class="v">{_e(v)}</div>'
        f'<div class="d">{_e(d)}</div></div>' for k, v, d in cards) + "</div>"


def render_html(report: Mapping[str, Any], plots: Sequence[tuple[str, str, bytes]] = ()) -> str:
    """report.html: one self-contained page; ``plots`` are ``(key, caption, png)`` triples."""
    status = report.get("status") if report.get("status") in ("PASS", "FAIL") else "NONE"
    badge = {"PASS": "PASS", "FAIL": "FAIL", "NONE": "NO GATES"}[status]
    command = str(report.get("command"))
    inp, out = report.get("input") or {}, report.get("output") or {}
    sub = _e(inp.get("path", "?")) + (f" \u2192 {_e(out['path'])}" if out else "")
    sub += f"<br>{_e(report.get('created', ''))}"
    device = _device_text(report)
    if device:
        sub += f" \u00b7 {_e(device)}"
    fails = "".join(f'<p class="failmsg">{_e(m)}</p>' for m in _failed_messages(report))
    if _interrupted_text(report):
        fails += f'<p class="warn">{_e(_interrupted_text(report))}</p>'
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>onnx-amc {_e(command)}: {_e(_status_word(report))}</title>",
        f"<style>{_CSS}</style></head><body><main>",
        f'<header><div class="badge {status}">{badge}</div><div>',
        f"<h1>onnx-amc {_e(command)}</h1><div class=\"sub\">{sub}</div>{fails}</div></header>",
        _cards(report),
    ]

    rows = summary_rows(report)
    if report.get("after"):
        table = _html_table(["", "before", "after", "change"], rows, right=(1, 2, 3))
    else:
        table = _html_table(["", "model"], [(r[0], r[1]) for r in rows], right=(1,))
    notes = _latency_notes(report)
    note = f'<p class="note">Latency: {_e("; ".join(notes))}.</p>' if notes else ""
    note += f'<p class="note">Numbers: {_e(_measured_text(report))}.</p>'
    title = "Before and after" if report.get("after") else "Model"
    parts.append(f"<section><h2>{title}</h2>{table}{note}</section>")

    gates = gate_rows(report)
    if gates:
        pills = [(*g[:3], _Raw(f'<span class="pill {g[3]}">{g[3]}</span>'), g[4]) for g in gates]
        parts.append("<section><h2>Gates</h2>" + _html_table(
            ["gate", "limit", "value", "result", "message"], pills, right=(1, 2),
            row_class=["fail" if g[3] == "FAIL" else "" for g in gates]) + "</section>")
    else:
        parts.append('<section><h2>Gates</h2><p class="note" style="margin:0">No gates were set '
                     "(status NONE).</p></section>")

    if plots:
        figs = "".join(
            f'<figure><img alt="{_e(key)}" src="data:image/png;base64,'
            f'{base64.b64encode(png).decode("ascii")}"><figcaption>{_e(caption)}</figcaption>'
            "</figure>" for key, caption, png in plots)
        parts.append(f"<section><h2>Plots</h2>{figs}</section>")

    budget, search = _budget_text(report), _search_items(report)
    if budget or search:
        items = ([("budget", budget)] if budget else []) + search
        parts.append("<section><h2>Budget and search</h2><dl>" + "".join(
            f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in items) + "</dl></section>")

    groups = group_rows(report)
    if groups:
        table = _html_table(["#", "group", "kernel", "channels", "kept", "keep"], groups,
                            right=(0, 3, 4), cell_class={1: "id"},
                            row_class=["frozen" if g[5].startswith("frozen") else ""
                                       for g in groups])
        if len(groups) > 40:
            table = f"<details><summary>show all {len(groups)} groups</summary>{table}</details>"
        parts.append(f"<section><h2>Per-group keep ratios</h2>"
                     f'<p class="note" style="margin:0 0 10px">{_e(_group_summary(report))}</p>'
                     f"{table}</section>")

    files = [(k, _Raw(f"<code>{_e(p)}</code>"), _Raw(f"<code>{_e(h)}</code>"), s)
             for k, p, h, s in _files(report)]
    versions = report.get("versions") or {}
    parts.append(
        "<section><h2>Provenance</h2>"
        + _html_table(["file", "path", "sha256", "size"], files, right=(3,))
        + '<p class="note">Versions: '
        + _e(", ".join(f"{k} {v}" for k, v in versions.items())) + "</p></section>")
    parts.append("</main></body></html>\n")
    return "\n".join(parts)
