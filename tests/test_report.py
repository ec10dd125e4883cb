"""Report files: schema, strict JSON, Markdown and HTML content, atomic writes, a real browser."""

from __future__ import annotations

import base64
import copy
import io
import json
import math
import os
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from onnx_amc.errors import InputError
from onnx_amc.report import (
    REPORT_FORMAT,
    file_info,
    new_report,
    to_jsonable,
    validate,
    write_report,
)

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
_IMG = re.compile(r'<img [^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"')

# (id, channels, kernel, keep or None when frozen, frozen reason)
_GROUPS = [
    ("/stem/conv/Conv_output_0", 32, "3x3", 1.0, None),
    ("/layer1/0/conv1/Conv_output_0", 32, "1x1", 0.75, None),
    ("/layer1/0/dw/Conv_output_0", 32, "dw3x3", 0.75, None),
    ("/layer1/0/add/Add_output_0", 64, "1x1", None, "residual Add reaches /pool/GlobalAveragePool"),
    ("/layer2/0/conv1/Conv_output_0", 64, "3x3", 0.5, None),
    ("/layer2/0/conv2/Conv_output_0", 64, "3x3", 0.375, None),
    ("/layer2/1/conv1/Conv_output_0", 128, "1x1", 0.625, None),
    ("/layer3/0/dw/Conv_output_0", 128, "dw3x3", 0.5, None),
    ("/layer3/0/conv1/Conv_output_0", 128, "3x3", 0.25, None),
    ("/layer3/1/conv1/Conv_output_0", 256, "1x1", 0.3125, None),
    ("/head/fc1/Gemm_output_0", 256, "fc", 0.25, None),
    ("/head/fc2/Gemm_output_0", 10, "fc", None, "reaches graph output 'logits'"),
]


def _side(params: int, macs: int, size: int, median: float, iqr: float, top1: float,
          top5: float) -> dict[str, Any]:
    return {
        "params": params, "macs": macs, "size_bytes": size,
        "latency": {"median_ms": median, "iqr_ms": iqr, "runs": 200, "threads": 1,
                    "source": "measured", "detail": "batch 1, ORT_ENABLE_ALL, 95% CI +-2%"},
        "metrics": {"kind": "accuracy", "score": top1, "top1": top1, "top5": top5,
                    "agreement": None, "cosine": None, "rel_l2": None, "samples": 179},
    }


def make_report(command: str = "compress", *, episodes: int = 40, warmup: int = 10,
                gates: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A fake but plausible report: 12 groups (1x1, 3x3, dw, fc, two frozen), 40 episodes."""
    rep = new_report(command)
    rep["input"] = {"path": "models/mobile_resnet.onnx", "sha256": "a" * 64, "bytes": 1_843_212}
    rep["device"] = {"target": "host", "cpu": "Intel(R) Xeon(R) CPU @ 2.20GHz", "cores": 2,
                     "threads": 1, "provider": "CPUExecutionProvider", "onnxruntime": "1.20.1"}
    rep["before"] = _side(459_018, 48_912_384, 1_843_212, 1.482, 0.061, 0.9721, 0.9972)
    rep["measured"] = {"params": "counted", "macs": "counted", "latency": "measured",
                       "metrics": "measured"}
    if gates is not None:
        rep["gates"] = gates
        rep["status"] = "PASS" if all(g["passed"] for g in gates) else "FAIL"
    if command == "evaluate":
        return rep
    rep["output"] = {"path": "out/mobile_resnet_amc.onnx", "sha256": "b" * 64, "bytes": 702_554}
    rep["after"] = _side(171_730, 24_301_220, 702_554, 0.871, 0.044, 0.9665, 0.9944)
    groups = []
    for i, (gid, ch, kernel, keep, frozen) in enumerate(_GROUPS):
        kept = ch if keep is None else math.ceil(keep * ch)
        groups.append({"index": i, "id": gid, "channels": ch,
                       "keep": None if keep is None else keep, "kept": kept,
                       "kernel": kernel, "macs": 4096 * ch * (i + 1), "frozen_reason": frozen})
    rep["groups"] = groups
    if command == "prune":
        return rep
    rep["budget"] = {"kind": "macs", "keep": 0.5, "use": 0.4968}
    rep["search"] = {"method": "ddpg", "seed": 0, "episodes": episodes, "warmup": warmup,
                     "reconstruct": True, "round_to": 8, "interrupted": False, "seconds": 213.4}
    rng = random.Random(0)
    eps = []
    for e in range(episodes):
        phase = "warmup" if e < warmup else "agent"
        learned = 0.0 if e < warmup else min(1.0, (e - warmup) / 20)
        score = min(0.99, 0.86 + 0.08 * learned + rng.uniform(-0.04, 0.03))
        use = rng.uniform(0.44, 0.5)
        eps.append({"episode": e, "phase": phase, "reward": score - 1.0, "score": score,
                    "budget_use": use, "latency_ms": round(0.55 + 0.7 * use + rng.gauss(0, 0.03), 4)})
    rep["episodes"] = eps
    return rep


def _gate(passed: bool) -> dict[str, Any]:
    value = 0.0056 if passed else 0.0312
    sign = "<=" if passed else ">"
    return {"name": "max-accuracy-drop", "limit": 0.01, "value": value, "passed": passed,
            "message": f"accuracy drop {value:.4f} {sign} 0.0100"}


def _images(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in _IMG.findall(html)]


# --------------------------------------------------------------------------- new_report, file_info


def test_new_report_fills_provenance() -> None:
    rep = new_report("prune")
    assert rep["format"] == REPORT_FORMAT
    assert rep["command"] == "prune" and rep["status"] == "NONE" and rep["gates"] == []
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", rep["created"])
    v = rep["versions"]
    assert v["onnx-amc"] and v["python"] == ".".join(map(str, sys.version_info[:3]))
    for name in ("onnx", "onnxruntime", "numpy"):
        assert re.match(r"\d+\.\d+", v[name]), name
    with pytest.raises(ValueError, match="unknown report command"):
        new_report("train")


def test_new_report_does_not_import_optional_packages() -> None:
    code = ("import sys; from onnx_amc.report import new_report; new_report('compress'); "
            "bad = [m for m in ('torch', 'stable_baselines3', 'gymnasium', 'matplotlib', "
            "'jsonschema') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_file_info_hashes_the_bytes(tmp_path: Path) -> None:
    p = tmp_path / "m.onnx"
    p.write_bytes(b"abc")
    info = file_info(p)
    assert info == {"path": str(p), "bytes": 3, "sha256":
                    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"}


# --------------------------------------------------------------------------- schema


@pytest.mark.parametrize("command", ["compress", "prune", "evaluate"])
def test_schema_accepts_good_reports(command: str) -> None:
    validate(make_report(command))
    validate(make_report(command, gates=[_gate(True), _gate(False)]))


def _set(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    *parents, last = path.split(".")
    node: Any = doc
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is _DELETE:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return doc


_DELETE = object()


@pytest.mark.parametrize(("path", "value", "where"), [
    ("format", "onnx-amc report v0", "report.format"),
    ("command", "train", "report.command"),
    ("status", "OK", "report.status"),
    ("created", "yesterday", "report.created"),
    ("before.params", None, "report.before.params"),
    ("before.params", 1.5, "report.before.params"),
    ("after.latency.source", "guessed", "report.after.latency.source"),
    ("input.sha256", "xyz", "report.input.sha256"),
    ("groups.3.keep", 1.5, "report.groups[3].keep"),
    ("episodes.0.episode", "0", "report.episodes[0].episode"),
    ("budget.kind", "energy", "report.budget.kind"),
    ("search.method", "ppo", "report.search.method"),
    ("gates", [{"name": "max-size", "limit": 1.0}], "report.gates[0]"),
    ("measured", _DELETE, "report"),
    ("groups", _DELETE, "report"),
])
def test_schema_rejects_broken_reports(path: str, value: Any, where: str) -> None:
    broken = _set(make_report(), path, value)
    with pytest.raises(ValueError) as info:
        validate(broken)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(where), msg


def test_validate_rejects_unserialisable_values() -> None:
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        validate(_set(make_report(), "search.seed", object()))


def test_write_report_validates_before_writing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"report\.before"):
        write_report(_set(make_report(), "before.params", None), tmp_path / "r")
    assert not (tmp_path / "r").exists()


# --------------------------------------------------------------------------- strict JSON


def test_nan_and_numpy_are_written_as_strict_json(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    rep = make_report()
    rep["after"]["latency"]["iqr_ms"] = float("nan")
    rep["episodes"][3]["reward"] = float("-inf")
    rep["episodes"][4]["score"] = np.float32("nan")
    rep["before"]["params"] = np.int64(459_018)
    rep["groups"][0]["keep"] = np.float64(1.0)
    with pytest.raises((TypeError, ValueError)):
        json.dumps(rep, allow_nan=False)  # the raw dict is not strict JSON
    paths = write_report(rep, tmp_path)
    text = paths["json"].read_text(encoding="utf-8")
    doc = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict constant {c}"))
    assert doc["after"]["latency"]["iqr_ms"] is None
    assert doc["episodes"][3]["reward"] is None and doc["episodes"][4]["score"] is None
    assert doc["before"]["params"] == 459_018 and type(doc["before"]["params"]) is int
    validate(doc)
    assert to_jsonable({"x": (1, Path("a/b"))}) == {"x": [1, "a/b"]}


# --------------------------------------------------------------------------- markdown


def test_markdown_has_tables_and_numbers(tmp_path: Path) -> None:
    md = write_report(make_report(gates=[_gate(True)]), tmp_path)["md"].read_text("utf-8")
    assert md.startswith("# onnx-amc compress: PASS\n")
    rows = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| ")}
    assert "| 459,018 | 171,730 | \u00d70.374 (\u221262.6%) |" in rows["parameters"]
    assert "| 48,912,384 | 24,301,220 | \u00d70.497 (\u221250.3%) |" in rows["MACs"]
    assert "1.84 MB" in rows["model size"] and "702.55 kB" in rows["model size"]
    assert ("| 1.482 \u00b1 0.061 ms (measured) | 0.871 \u00b1 0.044 ms (measured) "
            "| 1.70\u00d7 faster |") in rows["latency (median \u00b1 IQR)"]
    assert "| 0.9721 | 0.9665 | \u22120.0056 |" in rows["top-1 accuracy (179 samples)"]
    assert "| max-accuracy-drop | 0.01 | 0.0056 | PASS | accuracy drop 0.0056 \\<= 0.0100 |" in md
    assert "- budget: MACs: keep 0.5 of the original, chosen policy uses 0.4968" in md
    assert "- episodes: 40 (10 warm-up)" in md and "- seed: 0" in md
    assert "chosen candidate: episode " in md
    assert "12 groups: 9 pruned, 2 frozen" in md
    assert "frozen: reaches graph output 'logits'" in md
    assert f"| input | `models/mobile_resnet.onnx` | `{'a' * 64}` | 1,843,212 B |" in md
    assert "| 3 | `/layer1/0/add/Add_output_0` | 1x1 | 64 | 64 | frozen: residual Add" in md
    assert "onnxruntime " in md and "![" not in md


def test_markdown_fail_and_evaluate(tmp_path: Path) -> None:
    md = write_report(make_report(gates=[_gate(True), _gate(False)]), tmp_path)["md"].read_text()
    assert md.startswith("# onnx-amc compress: FAIL\n")
    assert "> **FAIL**: accuracy drop 0.0312 \\> 0.0100" in md
    assert "| FAIL |" in md
    md = write_report(make_report("evaluate"), tmp_path / "ev")["md"].read_text()
    assert md.startswith("# onnx-amc evaluate: no gates\n")
    assert "| parameters | 459,018 |" in md and "| before |" not in md
    assert "Budget and search" not in md and "Per-group" not in md


def test_interrupted_search_and_zero_delta_are_shown(tmp_path: Path) -> None:
    rep = make_report()
    rep["search"]["interrupted"] = True
    rep["after"]["metrics"]["top1"] = rep["before"]["metrics"]["top1"] + 1e-9
    paths = write_report(rep, tmp_path)
    md, html = paths["md"].read_text(), paths["html"].read_text()
    for text in (md, html):
        assert "Search interrupted: the output is the best candidate" in text
        assert "\u00b10.0000" in text and "\u22120.0000" not in text and "-0.0000" not in text


def test_markdown_escapes_table_breakers(tmp_path: Path) -> None:
    rep = make_report("prune")
    rep["groups"][1]["id"] = "a|b*c"
    md = write_report(rep, tmp_path)["md"].read_text()
    line = next(x for x in md.splitlines() if "a\\|b" in x)
    assert line.count(" | ") == 5  # six cells, the pipe in the id did not add one


# --------------------------------------------------------------------------- html


def test_html_is_self_contained_with_three_plots(tmp_path: Path) -> None:
    html = write_report(make_report(gates=[_gate(True)]), tmp_path)["html"].read_text("utf-8")
    assert not re.search(r"https?://", html)
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:)""", html)
    assert "<script" not in html and "@import" not in html and "url(" not in html
    images = _images(html)
    assert len(images) == 3
    pil = pytest.importorskip("PIL.Image")
    for png in images:
        with pil.open(io.BytesIO(png)) as im:
            assert im.format == "PNG" and im.width >= 800 and im.height >= 300
    for text in ("459,018", "171,730", "1.70\u00d7 faster", "max-accuracy-drop",
                 "Per-group keep ratios", "/layer3/1/conv1/Conv_output_0", "a" * 64):
        assert text in html, text
    assert 'class="badge PASS">PASS<' in html


def test_html_prune_and_evaluate_omit_empty_plots(tmp_path: Path) -> None:
    html = write_report(make_report("prune"), tmp_path / "p")["html"].read_text()
    assert len(_images(html)) == 1  # only the keep-ratio chart: no episodes
    assert 'class="badge NONE">NO GATES<' in html
    html = write_report(make_report("evaluate"), tmp_path / "e")["html"].read_text()
    assert len(_images(html)) == 0 and "<figure" not in html


def test_html_shows_fail(tmp_path: Path) -> None:
    html = write_report(make_report(gates=[_gate(True), _gate(False)]), tmp_path)["html"]
    text = html.read_text()
    assert 'class="badge FAIL">FAIL<' in text
    assert '<tr class="fail">' in text and "accuracy drop 0.0312 &gt; 0.0100" in text


def test_html_escapes_model_strings(tmp_path: Path) -> None:
    rep = make_report("prune")
    rep["groups"][0]["id"] = '<img src="http://evil/x.png">'
    text = write_report(rep, tmp_path)["html"].read_text()
    assert "<img src=\"http" not in text and "&lt;img src=&quot;http://evil" in text


def test_same_report_gives_identical_html(tmp_path: Path) -> None:
    rep = make_report("prune")  # one figure: keeps the test fast
    a = write_report(rep, tmp_path / "a")["html"].read_bytes()
    b = write_report(rep, tmp_path / "b")["html"].read_bytes()
    assert a == b and b"matplotlib" not in a


def test_candidates_fall_back_to_budget_use(tmp_path: Path) -> None:
    rep = make_report()
    for e in rep["episodes"]:
        e["latency_ms"] = None
    rep["search"]["chosen_episode"] = 7
    from onnx_amc.report.plots import chosen_episode, plot_candidates

    assert chosen_episode(rep) == 7
    assert plot_candidates(rep) is not None
    rep["search"].pop("chosen_episode")
    best = max(rep["episodes"], key=lambda e: e["reward"])["episode"]
    assert chosen_episode(rep) == best
    for e in rep["episodes"]:
        e["budget_use"] = None
    assert plot_candidates(rep) is None


def test_rendering_does_not_change_the_global_matplotlib_backend(tmp_path: Path) -> None:
    code = ("import matplotlib; before = matplotlib.get_backend(); "
            "import sys; from tests.test_report import make_report; "
            " from onnx_amc.report import write_report; "
            f"write_report(make_report('prune'), {str(tmp_path)!r}); "
            "import matplotlib as m; assert m.rcParams['font.size'] == 10.0; "
            "assert 'matplotlib.pyplot' not in sys.modules; print('ok')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          timeout=120, env={**os.environ, "MPLBACKEND": "Agg"})
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


# --------------------------------------------------------------------------- atomic writes


def test_atomic_write_leaves_no_temp_files(tmp_path: Path) -> None:
    out = tmp_path / "deep" / "report"
    paths = write_report(make_report(), out)
    assert set(paths) == {"json", "md", "html"}
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.json", "report.md"]
    first = paths["json"].read_text()
    write_report(make_report("prune", gates=[_gate(False)]), out)  # overwrite in place
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.json", "report.md"]
    assert json.loads(paths["json"].read_text())["status"] == "FAIL" != json.loads(first)["status"]


def test_failed_render_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import onnx_amc.report.plots as plots

    def boom(_report: Any) -> Any:
        raise RuntimeError("render failed")

    monkeypatch.setattr(plots, "render_plots", boom)
    with pytest.raises(RuntimeError, match="render failed"):
        write_report(make_report(), tmp_path / "r")
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())


def test_report_dir_that_is_a_file_is_input_error(tmp_path: Path) -> None:
    f = tmp_path / "taken"
    f.write_text("x")
    with pytest.raises(InputError, match="not a directory"):
        write_report(make_report(), f)


# --------------------------------------------------------------------------- browser


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian chromium at /usr/bin")
def test_chromium_screenshot_is_not_blank(tmp_path: Path) -> None:
    pil = pytest.importorskip("PIL.Image")
    html = write_report(make_report(gates=[_gate(True), _gate(False)]), tmp_path)["html"]
    png = tmp_path / "shot.png"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "screenshot_report.py"),
                           str(html), "-o", str(png)], capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stderr
    with pil.open(png) as im:
        assert im.size == (1280, 2400)
        rgb = im.convert("RGB")
        px = rgb.load()
        w, h = rgb.size
        # Count non-near-white pixels on a grid; a blank or failed page is (almost) all white.
        inked = sum(1 for x in range(0, w, 4) for y in range(0, h, 4)
                    if sum(px[x, y]) < 3 * 235)
        total = (w // 4) * (h // 4)
        assert inked / total > 0.05, f"only {inked / total:.3f} of the page has ink"
        # The FAIL badge is red (#b91c1c) and sits near the top-left of the page.
        top = rgb.crop((0, 0, 400, 200)).getcolors(400 * 200)
        assert any(c == (185, 28, 28) and n > 1000 for n, c in top)


def test_screenshot_script_reports_missing_chromium(tmp_path: Path) -> None:
    html = tmp_path / "r.html"
    html.write_text("<p>x</p>")
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "screenshot_report.py"),
                           str(html), "-o", str(tmp_path / "s.png"), "--chromium",
                           str(tmp_path / "no-chromium")], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "chromium not found" in proc.stderr
