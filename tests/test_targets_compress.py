"""compress with latency budgets and targets: a bundled measured profile (predicted), a name
without a profile (estimated, said loudly), a latency budget measured on this host, and a
FLOPs search whose result is measured on a device over SSH (a real sshd on localhost)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from onnx_amc.targets.named import bundled_names
from tests.cli_runner import invoke
from tests.test_ssh_target import Sshd, sshd  # noqa: F401 (the fixture)

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "onnx_amc" / "assets" / "digits_cnn.onnx"
CALIB = ROOT / "onnx_amc" / "assets" / "digits_calib.npz"
CLI = [sys.executable, "-m", "onnx_amc.cli"]
SHORT = ["--episodes", "4", "--warmup", "2"]


def _run(*args, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def _report(d: Path) -> dict:
    from onnx_amc.report import validate

    rep = json.loads((d / "report.json").read_text())
    validate(rep)
    return rep


def _budget_line(stdout: str) -> str:
    return next(line for line in stdout.splitlines() if line.startswith("budget:"))


def test_budget_line_says_where_a_latency_use_comes_from():
    """On host the "used" number is the action wall's prediction and the table's latencies are
    measured: the budget line gives both, so the two numbers of one output do not disagree
    unexplained."""
    from types import SimpleNamespace

    from onnx_amc.cli import _budget_source

    def res(source, before=None, after=None, kind="latency"):
        return SimpleNamespace(budget_kind=kind, latency_source=source, target="t",
                               latency_before=before, latency_after=after)

    assert _budget_source(res("measured", 2.0, 1.1)) == (
        " as the action wall predicts it; measured: 0.5500")
    assert _budget_source(res("measured")) == " as the action wall predicts it"
    assert _budget_source(res("predicted", 2.0, 1.0)) == " (predicted from the profile 't')"
    assert "NOT MEASURED" in _budget_source(res("estimated"))
    assert _budget_source(res("measured", 2.0, 1.0, kind="macs")) == ""


def test_latency_budget_on_a_bundled_profile_is_predicted_and_met(tmp_path):
    name = bundled_names()[0]
    r = _run("compress", MODEL, "-o", tmp_path / "o.onnx", "--calib", CALIB, "--latency", "0.6",
             "--target", name, *SHORT, "--report", tmp_path / "rep")
    assert r.returncode == 0, r.stderr
    assert "latency (predicted" in r.stdout
    assert f"predicted from the profile '{name}'" in _budget_line(r.stdout)
    rep = _report(tmp_path / "rep")
    assert rep["budget"]["kind"] == "latency" and rep["budget"]["use"] <= 0.6 + 1e-9
    assert rep["measured"]["latency"] == "predicted"
    from onnx_amc.targets.named import resolve_target

    hint = resolve_target(name).profile["round_to_hint"]["round_to"]
    assert rep["search"]["round_to"] == hint  # the target's measured fast multiple
    assert rep["after"]["latency"]["source"] == "predicted"
    assert rep["after"]["latency"]["median_ms"] <= 0.6 * rep["before"]["latency"]["median_ms"] * (
        1 + 1e-6)


def test_a_name_without_a_measured_profile_is_estimated_and_says_so(tmp_path):
    r = _run("compress", MODEL, "-o", tmp_path / "o.onnx", "--calib", CALIB, "--latency", "0.6",
             "--target", "arm64", *SHORT, "--report", tmp_path / "rep")
    assert r.returncode == 0, r.stderr
    assert r.stderr.upper().count("ESTIMATED, NOT MEASURED") == 1  # said once, not twice
    assert "ESTIMATED from FLOPs/memory, NOT MEASURED" in _budget_line(r.stdout)
    rep = _report(tmp_path / "rep")
    assert rep["measured"]["latency"] in (None, "estimated")
    assert rep["budget"]["use"] <= 0.6 + 1e-9
    onnx.checker.check_model(onnx.load(str(tmp_path / "o.onnx")), full_check=True)


def test_min_speedup_needs_measured_latency(tmp_path):
    r = _run("compress", MODEL, "-o", tmp_path / "o.onnx", "--calib", CALIB, "--latency", "0.6",
             "--target", "arm64", "--min-speedup", "1.1")
    assert r.returncode == 2 and "measured latency" in r.stderr
    assert not (tmp_path / "o.onnx").exists()


@pytest.mark.parametrize("content,needle", [
    ("{not json", "profile"),
    (json.dumps({"format": "something else"}), "profile"),
])
def test_malformed_profile_is_one_line_exit_2(tmp_path, content, needle):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    r = _run("compress", MODEL, "-o", tmp_path / "o.onnx", "--calib", CALIB, "--latency", "0.6",
             "--target", bad)
    assert r.returncode == 2 and needle in r.stderr.lower() and r.stderr.count("\n") == 1
    assert not (tmp_path / "o.onnx").exists()


def test_profile_of_another_model_is_refused(tmp_path):
    # A real profile of another model, built in-process with few whole-model variants: what
    # is tested is the refusal (the profile command has its own test in test_profile_predict).
    from graph_ops import analyze
    from onnx_amc.targets.profile import build_profile

    other = analyze(str(ROOT / "tests" / "data" / "digits" / "digits_vgg.onnx"))
    prof = tmp_path / "vgg.json"
    prof.write_text(json.dumps(build_profile(other, time_budget_s=3, variants=2)))
    r = invoke("compress", MODEL, "-o", tmp_path / "o.onnx", "--calib", CALIB, "--latency",
               "0.6", "--target", prof)
    assert r.returncode == 2 and "not this model" in r.stderr and r.stderr.count("\n") == 1


def test_latency_budget_on_host_measures_every_candidate(tmp_path):
    from onnx_amc import compress

    res = compress(str(MODEL), calib=str(CALIB), latency=0.7, episodes=3, warmup=2,
                   profile_time_s=6)
    assert res.budget_kind == "latency" and res.latency_source == "measured"
    assert all(r["latency_ms"] and r["latency_ms"] > 0 for r in res.records)
    assert res.latency_after.median_ms < res.latency_before.median_ms
    # The best distinct candidates were timed again and the result chosen on those timings.
    distinct = {tuple(r["keep_counts"]) for r in res.records}
    assert len(res.confirmed) == min(3, len(distinct))
    assert [c["reward_search"] for c in res.confirmed] == sorted(
        (c["reward_search"] for c in res.confirmed), reverse=True)
    chosen = max(res.confirmed, key=lambda c: c["reward"])
    assert res.chosen_episode == chosen["episode"] and all(c["latency_ms"] > 0
                                                           for c in res.confirmed)
    from onnx_amc.report import to_jsonable, validate
    from onnx_amc.report.collect import compress_report, finish

    rep = compress_report(res, model=str(MODEL), output=None)
    validate(finish(to_jsonable(rep), []))
    assert rep["search"]["confirmed"] == res.confirmed
    assert rep["search"]["chosen_episode"] == res.chosen_episode


def test_flops_search_measured_on_a_device_over_ssh(sshd, monkeypatch, tmp_path):  # noqa: F811
    from onnx_amc import compress
    from onnx_amc.targets import ssh as ssh_mod

    url = sshd.target().url
    real = ssh_mod.SshTarget.parse

    def parse(u, **kw):  # the test's own client config (keys, known_hosts) instead of ~/.ssh
        return real(u, config_file=sshd.client_config, **kw)

    monkeypatch.setattr(ssh_mod.SshTarget, "parse", staticmethod(parse))
    before = sshd.logins()
    res = compress(str(MODEL), calib=str(CALIB), flops=0.5, search="uniform", target=url)
    assert res.latency_source == "measured" and res.target == url
    assert res.latency_after.median_ms > 0 and res.latency_before.median_ms > 0
    assert sshd.logins() - before == 2  # the check at start, one batch for before/after


def test_dynamic_hw_model_is_measured_over_ssh_at_the_data_shape(sshd, monkeypatch,  # noqa: F811
                                                                   tmp_path):
    """A model with symbolic H and W (declared dims the device cannot guess) is timed on the
    device at the calibration data's shape, as on the host."""
    import onnx

    from onnx_amc import compress
    from onnx_amc.targets import ssh as ssh_mod

    m = onnx.load(str(MODEL))
    dims = m.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "H", "W"
    path = tmp_path / "dynamic_hw.onnx"
    onnx.save(m, str(path))
    url = sshd.target().url
    real = ssh_mod.SshTarget.parse
    monkeypatch.setattr(ssh_mod.SshTarget, "parse", staticmethod(
        lambda u, **kw: real(u, config_file=sshd.client_config, **kw)))
    name = m.graph.input[0].name
    res = compress(str(path), calib=str(CALIB), flops=0.5, search="uniform",
                   target=url, input_shapes={name: (1, 1, 32, 32)})
    assert res.latency_source == "measured"
    assert res.latency_after.median_ms > 0 and res.latency_before.median_ms > 0


def test_latency_budget_over_ssh_confirms_the_best_in_one_round_trip(sshd, monkeypatch,  # noqa: F811
                                                                      tmp_path):
    """Every candidate is timed on the device; at the end the best ones are timed once more,
    all in one login, and the result is chosen on those timings."""
    from onnx_amc import compress
    from onnx_amc.targets import ssh as ssh_mod

    url = sshd.target().url
    real = ssh_mod.SshTarget.parse
    monkeypatch.setattr(ssh_mod.SshTarget, "parse", staticmethod(
        lambda u, **kw: real(u, config_file=sshd.client_config, **kw)))
    logins: list[int] = []
    real_confirm = __import__("onnx_amc.search.confirm", fromlist=["x"]).confirm_latency

    def spy(*args, **kw):
        before = sshd.logins()
        out = real_confirm(*args, **kw)
        logins.append(sshd.logins() - before)
        return out

    monkeypatch.setattr("onnx_amc.search.confirm.confirm_latency", spy)
    res = compress(str(MODEL), calib=str(CALIB), latency=0.7, episodes=3, warmup=2,
                   target=url, profile_time_s=10)
    assert res.latency_source == "measured" and res.target == url
    assert res.confirmed and logins == [1]
    assert res.chosen_episode == max(res.confirmed, key=lambda c: c["reward"])["episode"]


def test_a_folder_as_target_is_refused(tmp_path):
    (tmp_path / "prof").mkdir()
    r = _run("compress", MODEL, "-o", tmp_path / "o.onnx", "--calib", CALIB, "--latency", "0.6",
             "--target", tmp_path / "prof")
    assert r.returncode == 2 and "is a folder" in r.stderr and r.stderr.count("\n") == 1
    assert not (tmp_path / "o.onnx").exists()
