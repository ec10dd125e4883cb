"""onnx-amc compress end to end on the default model, in a subprocess: outputs, re-applying the
policy, determinism, Ctrl-C keeping the best candidate, and bad budgets."""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import onnx
import pytest

from tests.cli_runner import invoke

ASSETS = Path(__file__).resolve().parents[1] / "onnx_amc" / "assets"
MODEL, CALIB = ASSETS / "digits_cnn.onnx", ASSETS / "digits_calib.npz"
CLI = [sys.executable, "-m", "onnx_amc.cli"]


def _run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


# Runs whose process exit is not what a test is about go through ``invoke`` (the CLI in this
# process): a fresh interpreter costs about 6 s of torch and torch._dynamo imports per search.


def test_compress_writes_model_policy_and_log_and_policy_reapplies(tmp_path):
    out = tmp_path / "c.onnx"
    r = _run("compress", str(MODEL), "-o", str(out), "--calib", str(CALIB), "--flops", "0.5",
             "--episodes", "12", "--warmup", "4", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "budget: keep 0.5 of macs" in r.stdout
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    policy = json.loads((tmp_path / "c.onnx.policy.json").read_text())
    assert policy["budget"]["use"] <= 0.5 + 1e-9
    lines = (tmp_path / "c.onnx.log.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["settings"]["budget_keep"] == 0.5
    log = [json.loads(line) for line in lines[1:]]
    assert len(log) == 12 and all("reward" in e and "policy" in e for e in log)
    assert all(e["budget_use"] <= 0.5 + 1e-9 for e in log)
    # The policy file is a valid prune --policy: same kept channels, same weights.
    again = tmp_path / "again.onnx"
    r = invoke("prune", str(MODEL), "-o", str(again), "--policy",
               str(tmp_path / "c.onnx.policy.json"))
    assert r.returncode == 0, r.stderr
    a = {t.name: t.raw_data for t in onnx.load(str(out)).graph.initializer}
    b = {t.name: t.raw_data for t in onnx.load(str(again)).graph.initializer}
    assert a == b


def test_same_seed_same_policy(tmp_path):
    """One run in a fresh process, one in this one (after whatever ran before it here): the
    policy may depend on the seed only, not on a process's state."""
    docs = []
    for i, run in enumerate((_run, invoke)):
        out = tmp_path / f"s{i}.onnx"
        r = run("compress", str(MODEL), "-o", str(out), "--calib", str(CALIB), "--params",
                "0.6", "--episodes", "10", "--warmup", "3", "--seed", "3", "--no-progress")
        assert r.returncode == 0, r.stderr
        docs.append(json.loads((tmp_path / f"s{i}.onnx.policy.json").read_text())["groups"])
    assert docs[0] == docs[1]


def test_ctrl_c_keeps_best_candidate_so_far(tmp_path):
    out = tmp_path / "i.onnx"
    log = tmp_path / "i.onnx.log.jsonl"
    proc = subprocess.Popen([*CLI, "compress", str(MODEL), "-o", str(out), "--calib", str(CALIB),
                             "--flops", "0.5", "--episodes", "100000", "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        if log.exists() and len(log.read_text().splitlines()) >= 3:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "interrupted: best so far" in stdout
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    assert json.loads((tmp_path / "i.onnx.policy.json").read_text())["groups"]


def _swallowed_ctrl_c() -> None:
    """A Ctrl-C whose KeyboardInterrupt lands where it is dropped, as in a finaliser."""
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1.0)
    except KeyboardInterrupt:
        pass


def test_a_swallowed_ctrl_c_still_stops_the_search():
    """Python raises KeyboardInterrupt wherever the main thread is, and one that lands in a
    finaliser is printed and dropped; the search must still stop after that episode."""
    from onnx_amc import compress

    seen: list[dict] = []

    def on_record(rec: dict) -> None:
        seen.append(rec)
        if len(seen) == 3:
            _swallowed_ctrl_c()

    before = signal.getsignal(signal.SIGINT)
    res = compress(str(MODEL), calib=str(CALIB), flops=0.5, episodes=500, warmup=5,
                   on_record=on_record)
    assert res.interrupted and len(res.records) == len(seen) == 3
    assert signal.getsignal(signal.SIGINT) is before


def test_a_swallowed_ctrl_c_stops_greedy_during_its_probes(monkeypatch):
    """Greedy's sensitivity probes are not recorded episodes, so the check after each record
    never runs while they do: a swallowed Ctrl-C must stop them after the probe it hit."""
    from onnx_amc import compress
    from onnx_amc.scoring import CandidateScorer

    calls = []
    real = CandidateScorer.__call__

    def scored(self, policy):
        calls.append(policy)
        if len(calls) == 3:
            _swallowed_ctrl_c()
        return real(self, policy)

    monkeypatch.setattr(CandidateScorer, "__call__", scored)
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):  # no candidate yet: nothing to keep
        compress(str(MODEL), calib=str(CALIB), flops=0.5, search="greedy")
    assert len(calls) == 3
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.parametrize("args,needle", [
    (["--flops", "1.5"], "fraction in (0, 1)"),
    (["--flops", "0.5", "--params", "0.5"], "exactly one budget"),
    ([], "exactly one budget"),
    (["--flops", "0.001"], "infeasible"),
])
def test_bad_budgets_exit_2_before_searching(tmp_path, args, needle):
    out = tmp_path / "o.onnx"
    r = invoke("compress", str(MODEL), "-o", str(out), "--calib", str(CALIB), *args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert needle in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not out.exists() and not (tmp_path / "o.onnx.log.jsonl").exists()


def test_calibration_that_does_not_fit_is_refused_before_search(tmp_path):
    import numpy as np

    bad = tmp_path / "bad.npz"
    np.savez(bad, input=np.zeros((8, 3, 32, 32), np.float32))
    r = _run("compress", str(MODEL), "-o", str(tmp_path / "o.onnx"), "--calib", str(bad),
             "--flops", "0.5")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert os.listdir(tmp_path) == ["bad.npz"]


def test_resume_replays_finished_episodes_and_reaches_the_same_policy(tmp_path):
    common = ["--calib", str(CALIB), "--flops", "0.5", "--episodes", "16", "--warmup", "5",
              "--seed", "1", "--no-progress"]
    full = tmp_path / "full.onnx"
    assert invoke("compress", str(MODEL), "-o", str(full), *common).returncode == 0
    out = tmp_path / "part.onnx"
    log = tmp_path / "part.onnx.log.jsonl"
    proc = subprocess.Popen([*CLI, "compress", str(MODEL), "-o", str(out), *common],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and len(log.read_text().splitlines()) >= 7:  # settings + 6 episodes
            proc.send_signal(signal.SIGINT)
            break
        time.sleep(0.05)
    proc.communicate(timeout=120)
    done_before = len(log.read_text().splitlines()) - 1
    r = _run("compress", str(MODEL), "-o", str(out), *common, "--resume", str(log))
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in log.read_text().splitlines()[1:]]
    assert len(rows) == 16
    assert sum(row["cached"] for row in rows[:done_before]) == done_before
    policy = json.loads((tmp_path / "part.onnx.policy.json").read_text())["groups"]
    assert policy == json.loads((tmp_path / "full.onnx.policy.json").read_text())["groups"]


def test_resume_refuses_a_log_of_another_search(tmp_path):
    out = tmp_path / "a.onnx"
    args = ["--calib", str(CALIB), "--episodes", "3", "--warmup", "1", "--no-progress"]
    assert invoke("compress", str(MODEL), "-o", str(out), "--flops", "0.5", *args).returncode == 0
    r = invoke("compress", str(MODEL), "-o", str(tmp_path / "b.onnx"), "--flops", "0.6", *args,
               "--resume", str(tmp_path / "a.onnx.log.jsonl"))
    assert r.returncode == 2 and "other settings" in r.stderr


def test_greedy_search_logs_its_probes_meets_the_budget_and_resumes(tmp_path):
    out = tmp_path / "g.onnx"
    args = ["compress", str(MODEL), "-o", str(out), "--calib", str(CALIB), "--flops", "0.5",
            "--search", "greedy", "--no-progress"]
    r = _run(*args)
    assert r.returncode == 0, r.stderr
    assert "search: greedy, " in r.stdout and " sensitivity probes and 1 candidate" in r.stdout
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    policy = json.loads((tmp_path / "g.onnx.policy.json").read_text())
    assert policy["budget"]["use"] <= 0.5 + 1e-9
    log = [json.loads(line) for line in (tmp_path / "g.onnx.log.jsonl").read_text().splitlines()]
    probes = [e for e in log[1:] if e.get("phase") == "sensitivity"]
    finals = [e for e in log[1:] if e.get("phase") == "greedy"]
    groups = log[0]["settings"]["groups"]
    assert len(probes) == 8 * len(groups) and len(finals) == 1
    assert {p["group"] for p in probes} == set(groups)
    assert all(0.0 <= p["score"] <= 1.0 and 0.2 <= p["ratio"] < 1.0 for p in probes)
    assert set(finals[0]["sensitivity"]) == set(groups)
    # Its log is a valid --resume (the probes are skipped, not taken for candidates).
    again = tmp_path / "g2.onnx"
    r = invoke(*[a if a != str(out) else str(again) for a in args], "--resume",
               str(tmp_path / "g.onnx.log.jsonl"))
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "g2.onnx.policy.json").read_text())["groups"] == \
        policy["groups"]


def test_ddpg_settings_are_checked_before_the_search_and_kept_apart_for_resume(tmp_path):
    from onnx_amc.compress import compress
    from onnx_amc.errors import InputError

    log = tmp_path / "s.jsonl"
    with pytest.raises(InputError, match="ddpg settings"):
        compress(MODEL, calib=CALIB, flops=0.5, episodes=3, warmup=1, ddpg={"sigma_decay": 2},
                 log_path=log, measure_latency=False)
    assert not log.exists()  # nothing written before the error
    res = compress(MODEL, calib=CALIB, flops=0.5, episodes=3, warmup=1, log_path=log,
                   ddpg={"sigma_decay": 0.95}, measure_latency=False)
    assert res.episodes_run == 3
    with pytest.raises(InputError, match="other settings"):  # another decay is another search
        compress(MODEL, calib=CALIB, flops=0.5, episodes=3, warmup=1, resume=log,
                 measure_latency=False)


def test_score_option_is_what_the_search_maximises_and_is_kept_apart_for_resume(tmp_path):
    from onnx_amc.compress import compress
    from onnx_amc.errors import InputError

    log = tmp_path / "c.jsonl"
    res = compress(MODEL, calib=CALIB, flops=0.5, episodes=3, warmup=1, score="cosine",
                   log_path=log, measure_latency=False)
    assert res.score_kind == "cosine"
    assert res.records and all(r["score"] == pytest.approx(r["extra"]["mean_cosine"])
                               for r in res.records)
    assert res.metrics_after.score_name == "top1"  # reported as auto whatever is searched
    with pytest.raises(InputError, match="other settings"):
        compress(MODEL, calib=CALIB, flops=0.5, episodes=3, warmup=1, resume=log,
                 measure_latency=False)
    with pytest.raises(InputError, match="--score must be one of"):
        compress(MODEL, calib=CALIB, flops=0.5, episodes=3, score="top5", measure_latency=False)
    r = _run("compress", str(MODEL), "-o", str(tmp_path / "x.onnx"), "--calib", str(CALIB),
             "--flops", "0.5", "--score", "top5")
    assert r.returncode == 2 and "--score" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "x.onnx").exists()


def test_fill_budget_is_the_default_spends_more_and_is_kept_apart_for_resume(tmp_path):
    from onnx_amc.compress import compress
    from onnx_amc.errors import InputError

    kw = dict(calib=CALIB, flops=0.5, episodes=4, warmup=4, measure_latency=False)
    plain = compress(MODEL, fill=False, **kw)
    log = tmp_path / "f.jsonl"
    filled = compress(MODEL, log_path=log, **kw)
    assert json.loads(log.read_text().splitlines()[0])["settings"]["fill"] is True
    # The same seed draws the same warm-up actions; filled, each candidate spends at least as
    # much of the budget, and never more than all of it.
    for p, f in zip(plain.records, filled.records, strict=True):
        assert p["budget_use"] <= f["budget_use"] <= 0.5 + 1e-12
        assert f.get("chosen", f["ratios"]) == pytest.approx(p["ratios"])
    assert any("chosen" in f for f in filled.records)
    with pytest.raises(InputError, match="other settings"):
        compress(MODEL, resume=log, fill=False, **kw)
    # A log of an earlier version (no "fill" in its settings) searched without filling.
    lines = log.read_text().splitlines()
    head = json.loads(lines[0])
    del head["settings"]["fill"]
    old = tmp_path / "old.jsonl"
    old.write_text("\n".join([json.dumps(head), *lines[1:]]) + "\n")
    with pytest.raises(InputError, match="other settings"):
        compress(MODEL, resume=old, **kw)
    assert compress(MODEL, resume=old, fill=False, **kw).episodes_run == 4
    r = _run("compress", "--help")
    assert "--no-fill-budget" in r.stdout


def test_ctrl_c_while_the_best_candidate_is_finished_still_returns_it(monkeypatch):
    """A Ctrl-C after the last episode, while the best candidate is rebuilt (reconstruction,
    final scores, timings), must not lose it: the audit saw exit 130 with only the log."""
    compress_mod = importlib.import_module("onnx_amc.compress")  # the attribute is the function
    from onnx_amc import compress

    real = compress_mod._final_latency

    def final_latency(*args):
        signal.raise_signal(signal.SIGINT)  # lands while the finishing phase runs
        return real(*args)

    monkeypatch.setattr(compress_mod, "_final_latency", final_latency)
    before = signal.getsignal(signal.SIGINT)
    res = compress(str(MODEL), calib=str(CALIB), flops=0.5, episodes=3, warmup=1)
    assert res.interrupted and res.model is not None and len(res.records) == 3
    assert signal.getsignal(signal.SIGINT) is before


def test_a_second_ctrl_c_while_finishing_aborts(monkeypatch):
    compress_mod = importlib.import_module("onnx_amc.compress")  # the attribute is the function
    from onnx_amc import compress

    def final_latency(*args):
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGINT)
        raise AssertionError("the second Ctrl-C should have raised")

    monkeypatch.setattr(compress_mod, "_final_latency", final_latency)
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        compress(str(MODEL), calib=str(CALIB), flops=0.5, episodes=2, warmup=1)
    assert signal.getsignal(signal.SIGINT) is before


def test_ctrl_c_before_any_episode_is_one_line_and_leaves_no_log(tmp_path, monkeypatch):
    """Nothing to keep yet: one line ("interrupted", no "keeping the best candidate"), exit
    130, and no settings-only log left beside OUT."""
    from click.testing import CliRunner

    from onnx_amc.cli import main
    from onnx_amc.scoring import CandidateScorer

    def scored(self, policy):
        signal.raise_signal(signal.SIGINT)
        raise AssertionError("the Ctrl-C should have raised")

    monkeypatch.setattr(CandidateScorer, "__call__", scored)
    out = tmp_path / "z.onnx"
    res = CliRunner().invoke(main, ["compress", str(MODEL), "-o", str(out), "--calib",
                                    str(CALIB), "--flops", "0.5", "--episodes", "3",
                                    "--warmup", "1", "--no-progress"])
    assert res.exit_code == 130, res.output
    assert res.stderr.strip().splitlines() == ["onnx-amc: interrupted"]
    assert list(tmp_path.iterdir()) == []


def test_lbound_sets_the_action_range_and_what_budgets_are_feasible():
    """AMC's action range is [lbound, 1]: at the default 0.2 a 5% MACs budget is out of reach
    (refused, naming --lbound); with lbound 0.05 it is met and no group goes below it."""
    from onnx_amc import compress
    from onnx_amc.errors import InputError

    with pytest.raises(InputError, match="--lbound"):
        compress(str(MODEL), calib=str(CALIB), flops=0.05, episodes=2, warmup=1, round_to=1)
    res = compress(str(MODEL), calib=str(CALIB), flops=0.05, episodes=3, warmup=1,
                   round_to=1, lbound=0.05, measure_latency=False)
    assert res.budget_use <= 0.05 + 1e-9
    assert all(r >= 0.05 - 1e-9 for rec in res.records for r in rec["policy"].values())
    with pytest.raises(InputError, match="--lbound"):
        compress(str(MODEL), calib=str(CALIB), flops=0.5, episodes=2, lbound=0.0)


def test_resume_from_a_file_without_settings_says_it_is_no_search_log(tmp_path):
    from onnx_amc import compress
    from onnx_amc.errors import InputError

    for text in ("", "[1, 2]\n", '{"episode": 1}\n'):
        log = tmp_path / "x.log.jsonl"
        log.write_text(text)
        with pytest.raises(InputError, match="not an onnx-amc search log"):
            compress(str(MODEL), calib=str(CALIB), flops=0.5, episodes=2, resume=log)


def test_a_warmup_that_takes_every_episode_is_said(caplog):
    """--warmup >= --episodes leaves the agent one episode: said, not clamped silently."""
    import logging

    from onnx_amc.compress import compress

    with caplog.at_level(logging.WARNING, logger="onnx_amc.compress"):
        res = compress(MODEL, calib=CALIB, flops=0.5, episodes=3, warmup=5,
                       measure_latency=False)
    assert res.episodes_run == 3 and res.warmup == 2
    assert "warmup 5 >= 3 episodes" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="onnx_amc.compress"):
        compress(MODEL, calib=CALIB, flops=0.5, episodes=3, warmup=2, measure_latency=False)
    assert "warmup" not in caplog.text


_SHORT_SEARCH = ["--calib", str(CALIB), "--flops", "0.5", "--episodes", "2", "--warmup", "1",
                 "--no-progress"]


@pytest.fixture(scope="module")
def short_log(tmp_path_factory) -> str:
    d = tmp_path_factory.mktemp("log")
    r = invoke("compress", str(MODEL), "-o", str(d / "a.onnx"), *_SHORT_SEARCH)
    assert r.returncode == 0, r.stderr
    return (d / "a.onnx.log.jsonl").read_text()


@pytest.mark.parametrize("edit", [
    {"keep_counts": ["a", 1]},
    {"keep_counts": 3},
    {"reward": "high"},
    {"score": None},
    {"policy": [0.5]},
])
def test_a_hand_edited_resume_log_is_one_line_exit_2(tmp_path, short_log, edit):
    """Its records are refused when read, with the file named, not inside the search."""
    first, row, *rest = short_log.splitlines()
    log = tmp_path / "a.log.jsonl"
    log.write_text("\n".join([first, json.dumps({**json.loads(row), **edit}), *rest]) + "\n")
    r = invoke("compress", str(MODEL), "-o", str(tmp_path / "b.onnx"), *_SHORT_SEARCH,
               "--resume", str(log))
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "malformed episode record" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "b.onnx").exists()
