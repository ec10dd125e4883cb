"""CI gates and reports, end to end in a subprocess as a CI job runs them: exit codes 0/1/2,
one stderr line per failed gate, the model still written on a gate failure, and report files
that pass the JSON schema and say PASS or FAIL."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "onnx_amc" / "assets" / "digits_cnn.onnx"
CALIB = ROOT / "onnx_amc" / "assets" / "digits_calib.npz"
CLI = [sys.executable, "-m", "onnx_amc.cli"]


def _run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def _report(d: Path) -> dict:
    from onnx_amc.report import validate

    rep = json.loads((d / "report.json").read_text())
    validate(rep)
    html = (d / "report.html").read_text()
    assert "http://" not in html and "https://" not in html  # self-contained
    assert (d / "report.md").read_text().strip()
    return rep


@pytest.fixture(scope="module")
def compressed(tmp_path_factory):
    """One short search with all three gates set loose enough to pass, plus a report."""
    d = tmp_path_factory.mktemp("compress")
    out = d / "out.onnx"
    r = _run("compress", MODEL, "-o", out, "--calib", CALIB, "--flops", "0.5", "--episodes", 4,
             "--warmup", 2, "--reconstruct", "--max-accuracy-drop", "0.5", "--min-speedup",
             "0.5", "--max-size", "10", "--report", d / "rep")
    return d, out, r


def test_compress_gates_pass_exit_0_and_report_says_pass(compressed):
    d, out, r = compressed
    assert r.returncode == 0, r.stderr
    assert "gate passed: max-accuracy-drop" in r.stdout
    assert "latency (measured, this host)" in r.stdout
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    rep = _report(d / "rep")
    assert rep["status"] == "PASS" and rep["command"] == "compress"
    assert [g["name"] for g in rep["gates"]] == ["max-accuracy-drop", "min-speedup", "max-size"]
    assert rep["before"]["latency"]["source"] == "measured"
    assert rep["after"]["macs"] < rep["before"]["macs"]
    assert rep["budget"] == {"kind": "macs", "keep": 0.5, "use": pytest.approx(
        rep["after"]["macs"] / rep["before"]["macs"])}
    assert len(rep["episodes"]) == 4
    assert rep["output"]["sha256"] and rep["input"]["sha256"] != rep["output"]["sha256"]
    assert (d / "rep" / "report.html").read_text().count("data:image/png;base64,") == 3


def test_evaluate_gate_fails_exit_1_one_line_per_gate_and_report_says_fail(compressed,
                                                                           tmp_path):
    _, out, _ = compressed
    r = _run("evaluate", out, "--reference", MODEL, "--calib", CALIB, "--min-speedup", "50",
             "--max-size", "0.001", "--report", tmp_path / "rep")
    assert r.returncode == 1, r.stderr
    failed = [line for line in r.stderr.splitlines() if "gate failed" in line]
    assert len(failed) == 2 and "short by" in failed[0] and "over by" in failed[1]
    rep = _report(tmp_path / "rep")
    assert rep["status"] == "FAIL" and not any(g["passed"] for g in rep["gates"])


def test_prune_gate_fails_but_model_is_written(tmp_path):
    out = tmp_path / "p.onnx"
    r = _run("prune", MODEL, "-o", out, "--keep", "0.25", "--calib", CALIB,
             "--max-accuracy-drop", "0.01", "--report", tmp_path / "rep")
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and "max-accuracy-drop" in r.stderr and "over by" in r.stderr
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    rep = _report(tmp_path / "rep")
    assert rep["status"] == "FAIL" and rep["command"] == "prune"
    assert rep["after"]["metrics"]["score"] < rep["before"]["metrics"]["score"] - 0.01
    assert any(g["keep"] is not None and g["keep"] < 1 for g in rep["groups"])


@pytest.mark.parametrize("args,needle", [
    (["--max-accuracy-drop", "2"], "max-accuracy-drop must be in [0, 1]"),
    (["--min-speedup", "0"], "min-speedup must be > 0"),
    (["--max-size", "-1"], "max-size must be > 0"),
])
def test_bad_gate_limits_exit_2_before_anything_is_written(tmp_path, args, needle):
    out = tmp_path / "o.onnx"
    r = _run("prune", MODEL, "-o", out, "--keep", "0.5", *args)
    assert r.returncode == 2 and needle in r.stderr and r.stderr.count("\n") == 1
    assert not out.exists()


def test_gate_without_the_data_it_needs_is_a_usage_error(tmp_path):
    r = _run("prune", MODEL, "-o", tmp_path / "o.onnx", "--keep", "0.5",
             "--max-accuracy-drop", "0.01")
    assert r.returncode == 2 and "needs --calib" in r.stderr
    r = _run("evaluate", MODEL, "--calib", CALIB, "--min-speedup", "1.1")
    assert r.returncode == 2 and "--reference" in r.stderr


def test_report_path_that_is_a_file_is_refused(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    r = _run("prune", MODEL, "-o", tmp_path / "o.onnx", "--keep", "0.5", "--report", f)
    assert r.returncode == 2 and "not a folder" in r.stderr


def test_api_compress_result_saves_to_a_folder(tmp_path):
    import onnx_amc

    res = onnx_amc.compress(str(MODEL), calib=str(CALIB), flops=0.6, search="uniform")
    model_path = res.save(tmp_path / "result")
    assert model_path == tmp_path / "result" / "model.onnx"
    names = sorted(p.name for p in (tmp_path / "result").iterdir())
    assert names == ["model.onnx", "model.onnx.log.jsonl", "model.onnx.policy.json",
                     "report.html", "report.json", "report.md"]
    rep = _report(tmp_path / "result")
    assert rep["search"]["method"] == "uniform"
    again = onnx_amc.prune(str(MODEL), policy=onnx_amc.load_policy(
        str(model_path) + ".policy.json"))
    assert again.params_after == res.params_after


def test_python_prune_refuses_an_empty_policy():
    """From Python as from the CLI: an unchanged copy would pass for a pruned model."""
    import onnx_amc
    from onnx_amc.errors import InputError

    with pytest.raises(InputError, match="names no group"):
        onnx_amc.prune(str(MODEL), policy={})


def test_example_ci_script_fails_the_job_on_a_gate_and_keeps_the_report(tmp_path):
    script = ROOT / "examples" / "ci" / "compress-gate.sh"
    env = {**__import__("os").environ, "FLOPS": "0.3", "EPISODES": "3",
           "MAX_ACCURACY_DROP": "0", "MIN_SPEEDUP": "1.0", "MAX_SIZE_MB": "5",
           "ONNX_AMC": str(Path(sys.executable).with_name("onnx-amc"))}
    r = subprocess.run(["bash", str(script), str(MODEL), str(CALIB), str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "gate failed: max-accuracy-drop" in r.stderr
    rep = _report(tmp_path / "out" / "report")
    assert rep["status"] == "FAIL"
    onnx.checker.check_model(onnx.load(str(tmp_path / "out" / "model.onnx")), full_check=True)
