"""Latency measurement sanity (onnx_amc.latency)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from onnx_amc.errors import InputError
from onnx_amc.latency import (
    LatencyStats,
    available_providers,
    make_session,
    measure,
    measure_interleaved,
    median_ci,
    random_inputs,
    resolve_providers,
)
from onnx_amc.targets.remote_bench import session_options
from tests.test_data import make_classifier, make_two_input


def test_median_ci_order_statistics() -> None:
    x = np.arange(1.0, 7.0)
    # n = 6 is the smallest n with a 95 % order-statistic CI: [x_(1), x_(6)].
    assert median_ci(x) == (1.0, 6.0)
    assert median_ci(x[:5]) == (-math.inf, math.inf)
    # n = 100: exact ranks 40 and 61 (the textbook values).
    assert median_ci(np.arange(1.0, 101.0)) == (40.0, 61.0)
    lo, hi = median_ci(np.arange(1.0, 1001.0))  # normal approximation branch
    assert 460 <= lo <= 470 and 530 <= hi <= 541


def test_measure_basic_stats() -> None:
    model = make_classifier(batch=1).SerializeToString()
    stats = measure(
        model, threads=1, warmup=2, min_runs=10, rel_ci=0.5, time_cap_s=5.0, min_time_s=0.05
    )
    assert isinstance(stats, LatencyStats)
    assert stats.runs >= 10
    assert stats.median_ms > 0 and stats.mean_ms > 0 and stats.iqr_ms >= 0
    assert stats.threads == 1
    assert not stats.capped and stats.ci95_rel <= 0.5
    assert set(stats.as_dict()) >= {"median_ms", "ci95_rel", "capped"}


def test_measure_capped_when_time_cap_tiny() -> None:
    stats = measure(make_classifier(batch=1), warmup=1, min_runs=8, rel_ci=1e-12, time_cap_s=0.0)
    assert stats.capped
    assert stats.runs >= 8


def test_measure_session_and_explicit_inputs() -> None:
    session = make_session(make_classifier(batch="N").SerializeToString(), threads=2)
    assert isinstance(session, ort.InferenceSession)
    feeds = {"x": np.zeros((2, 3, 8, 8), np.float32)}
    stats = measure(session, feeds, warmup=1, min_runs=6, rel_ci=1.0, min_time_s=0.0)
    assert stats.threads == 2 and stats.runs >= 6


def test_random_inputs_dynamic_dims() -> None:
    session = make_session(make_classifier(batch="N").SerializeToString())
    feeds = random_inputs(session)
    assert feeds["x"].shape == (1, 3, 8, 8) and feeds["x"].dtype == np.float32
    two = make_session(make_two_input().SerializeToString())
    assert random_inputs(two)["ids"].dtype == np.int64

    model = make_classifier(batch="N")
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "H"
    with pytest.raises(InputError, match="'x' has dynamic dimension 2"):
        measure(model.SerializeToString(), warmup=0, min_runs=1)


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        make_session(make_classifier().SerializeToString(), threads=0)
    with pytest.raises(ValueError):
        measure(make_classifier(batch=1), min_runs=0)


def test_measure_interleaved_returns_one_stat_per_model() -> None:
    small = make_classifier(batch=1, hw=8).SerializeToString()
    big = make_classifier(batch=1, hw=32).SerializeToString()
    stats = measure_interleaved(
        [small, big], warmup=1, min_runs=10, rel_ci=0.5, time_cap_s=5.0, min_time_s=0.0
    )
    assert len(stats) == 2
    assert stats[0].runs >= 10 and stats[1].runs >= 10
    with pytest.raises(ValueError):
        measure_interleaved([])


def test_interleaved_timing_runs_blocks_and_skips_the_runs_after_a_switch() -> None:
    # Right after a switch a model runs from caches holding the other model: those runs are
    # untimed, and the models alternate in blocks of about BLOCK_S, not run by run.
    import time

    from onnx_amc.targets import remote_bench as rb

    calls: list[int] = []

    def runner(k: int, seconds: float):
        def run(_out, _feed):
            calls.append(k)
            time.sleep(seconds)
        return run

    times, _, _ = rb.time_round_robin(
        [runner(0, 0.004), runner(1, 0.001)], [{}, {}], warmup=1, min_runs=12, rel_ci=1.0,
        time_cap_s=5.0, min_time_s=0.0)
    groups = [(k, len(list(g))) for k, g in itertools.groupby(calls)]
    tail = groups[-4:]  # the last two blocks of each model, after warm-up's one-by-one runs
    assert [k for k, _ in tail] == [0, 1, 0, 1]
    b0, b1 = tail[0][1] - rb.SETTLE_RUNS, tail[1][1] - rb.SETTLE_RUNS
    assert 1 <= b0 < b1 <= rb.MAX_BLOCK_RUNS  # the faster model runs more per block
    assert len(times[0]) % b0 == 0 and len(times[1]) % b1 == 0
    blocks = len(times[0]) // b0
    assert len(times[1]) // b1 == blocks >= 12 // b0
    # untimed: the same warm-up and block sizing for both, then SETTLE_RUNS per block
    untimed = [calls.count(k) - len(times[k]) for k in (0, 1)]
    assert untimed[0] == untimed[1] >= rb.SETTLE_RUNS * blocks + 2


def test_ep_names_resolve_case_insensitively_with_cpu_fallback() -> None:
    assert "CPUExecutionProvider" in available_providers()
    for spelling in (None, [], "cpu", "CPU", ["CPUExecutionProvider"], " cpu , CPU "):
        assert resolve_providers(spelling) == ("CPUExecutionProvider",)
    stats = measure(make_classifier(batch=1), providers="cpu", warmup=1, min_runs=6, rel_ci=1.0)
    assert stats.runs >= 6


def test_ep_unavailable_is_one_line_listing_available() -> None:
    with pytest.raises(InputError, match=r"'NoSuchEP' is not available.*CPUExecutionProvider"):
        resolve_providers(["NoSuchEP"])
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(InputError, match="'cuda' is not available"):
            make_session(make_classifier().SerializeToString(), providers=["cuda"])
        with pytest.raises(InputError, match="'cuda' is not available"):
            measure(make_classifier(batch=1), providers=["cuda"], warmup=0, min_runs=1)


def test_ep_xnnpack_where_the_build_has_it() -> None:
    model = make_classifier(batch=1).SerializeToString()
    if "XnnpackExecutionProvider" in ort.get_available_providers():
        session = make_session(model, threads=2, providers=["xnnpack"])
        assert session.get_providers()[0] == "XnnpackExecutionProvider"
    else:
        with pytest.raises(InputError, match="'xnnpack' is not available.*--use_xnnpack") as e:
            make_session(model, providers=["xnnpack"])
        assert "\n" not in str(e.value)


def test_xnnpack_session_options_give_threads_to_xnnpack() -> None:
    # Pure option building: checkable without an XNNPACK build.
    opts, names, popts = session_options(
        ort, 4, ["XnnpackExecutionProvider", "CPUExecutionProvider"]
    )
    assert names[0] == "XnnpackExecutionProvider" and popts[0] == {"intra_op_num_threads": "4"}
    assert opts.intra_op_num_threads == 1
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    opts, _, popts = session_options(ort, 3, ["CPUExecutionProvider"])
    assert opts.intra_op_num_threads == 3 and popts == [{}]


def _wide_digits_cnn(width: int = 64) -> onnx.ModelProto:
    """The digits CNN's input and output, ~9 M MACs in a 3x3 conv between two wide tensors."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def init(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array(
            (rng.standard_normal(shape) * 0.1).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1],
                         strides=[2, 2]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "fw", "fb"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "wide_digits",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        [init("w1", width, 1, 3, 3), init("b1", width), init("w2", width, width, 3, 3),
         init("b2", width), init("fw", 10, width), init("fb", 10)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.mark.parametrize("threads", [1, 2])
def test_host_candidate_latency_is_a_fraction_of_the_original_measured_interleaved(
        monkeypatch, threads: int) -> None:
    """A latency budget is a fraction of the original: the search times each candidate
    interleaved with the original (one drift for both) and scales that fraction by the
    original's first median, the unit every candidate and the budget share. With several
    threads, sessions' spinning pools would time each other: candidates are timed alone."""
    import onnx_amc.latency as lat
    from graph_ops import analyze, apply, importance, make_plan
    from onnx_amc.api import load_calib
    from onnx_amc.scoring import CandidateScorer, ScoringSpec
    from tests.test_parallel import CALIB, MODEL

    calls: list[list] = []
    real = lat.measure_interleaved

    def spy(models, *args, **kwargs):
        calls.append(list(models))
        return real(models, *args, **kwargs)

    monkeypatch.setattr(lat, "measure_interleaved", spy)
    # A model the pruning can speed up beyond timing noise at both thread counts: the
    # 0.07 ms digits CNN at 2 threads is mostly pool wake-up, and its pruned copy was
    # sometimes timed slower than the original (1 in ~8 runs).
    a = analyze(_wide_digits_cnn() if threads > 1 else str(MODEL))
    spec = ScoringSpec(model=a.model.SerializeToString(),
                       search_data=load_calib(a.model, str(CALIB)), latency=True,
                       threads=threads)
    scorer = CandidateScorer(spec, analysis=a)
    unit = scorer.time_original()
    assert unit > 0 and scorer.time_original() == unit  # measured once, then the unit
    small = apply(a, make_plan(a, {g.id: 0.25 for g in a.prunable_groups}, importance(a)))
    ms = scorer._timer(small)
    if threads > 1:  # measure() of the original, then of the candidate, each alone
        assert [len(c) for c in calls] == [1, 1] and calls[1][0] == small.SerializeToString()
        assert 0 < ms < unit
        return
    # measure() of the original (once), then the candidate interleaved with the original
    assert [len(c) for c in calls] == [1, 2] and calls[1][0] is calls[0][0]
    assert isinstance(calls[1][0], ort.InferenceSession)
    assert calls[1][1] == small.SerializeToString()
    assert 0 < ms < unit  # a quarter of the channels everywhere runs faster
