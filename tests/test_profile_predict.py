"""Latency profiles and prediction (onnx_amc.targets.profile / predict / named / profile_cli)."""

from __future__ import annotations

import copy
import json
import logging
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from graph_ops import analyze, apply, importance, make_plan
from onnx_amc.cli import _Group
from onnx_amc.errors import InputError
from onnx_amc.latency import measure
from onnx_amc.search.budget import callable_budget, clamp_to_budget
from onnx_amc.search.space import build_space
from onnx_amc.targets.named import resolve_target
from onnx_amc.targets.predict import (
    Predictor,
    Table,
    estimate_cost_fn,
    find_units,
    load_profile,
    model_fingerprint,
    save_profile,
    validate_profile,
)
from onnx_amc.targets.profile import build_profile, fit_correction
from onnx_amc.targets.profile_cli import profile_command

ASSETS = Path(__file__).resolve().parent.parent / "onnx_amc" / "assets"
DIGITS = ASSETS / "digits_cnn.onnx"
SHAPES = {"input": (1, 1, 32, 32)}


@pytest.fixture(scope="module")
def analysis():
    return analyze(str(DIGITS), input_shapes=SHAPES)


@pytest.fixture(scope="module")
def profile(analysis) -> dict:
    return build_profile(analysis, time_budget_s=6, variants=3, name="digits_cnn")


@pytest.fixture(scope="module")
def predictor(profile, analysis) -> Predictor:
    return Predictor.from_profile(profile, analysis)


def _other_analysis():
    from tests.test_data import make_classifier

    return analyze(make_classifier(batch=1))


# -- units ---------------------------------------------------------------------------------

def test_units_fuse_conv_followers(analysis) -> None:
    units = find_units(analysis)
    ops = [u.ops for u in units]
    # The digits ResNet: Conv+Relu units, residual Conv+Add+Relu units, pool, flatten, Gemm.
    assert ("Conv", "Relu") in ops
    assert ("Conv", "Add", "Relu") in ops
    assert ops[-1] == ("Gemm",)
    covered = [n for u in units for n in u.nodes]
    assert len(covered) == len(set(covered)), "a node belongs to two units"
    # Every Conv/Relu/Add of the model is in exactly one unit.
    view = analysis.view
    want = {i for i, n in enumerate(view.nodes) if n.op_type in ("Conv", "Relu", "Add", "Gemm")}
    assert want <= set(covered)


def test_table_interpolates_and_is_monotone() -> None:
    samples = [[8, 8, 1.0], [8, 16, 2.0], [16, 8, 2.0], [16, 16, 4.5]]
    t = Table.from_samples(samples)
    assert t(8, 8) == pytest.approx(1.0)
    assert t(12, 12) == pytest.approx((1.0 + 2.0 + 2.0 + 4.5) / 4)
    # A noisy dip (larger count measured faster) is flattened, never inverted.
    noisy = Table.from_samples([[8, 8, 2.0], [16, 8, 1.0]])
    assert noisy(16, 8) >= noisy(8, 8)
    # Below the grid: extrapolated linearly, not below zero.
    assert 0.0 <= t(4, 8) <= t(8, 8)


def test_fit_correction_recovers_line() -> None:
    s = np.array([1.0, 2.0, 3.0, 4.0])
    a, b = fit_correction(s, 0.5 + 1.5 * s)
    assert a == pytest.approx(0.5) and b == pytest.approx(1.5)
    a, b = fit_correction(s, 2.0 * s - 0.3)  # negative intercept: refit through 0
    assert a == 0.0 and b > 0


def test_knots_interpolate_the_measured_points_monotone_and_positive() -> None:
    from onnx_amc.targets.predict import corrected_ms
    from onnx_amc.targets.profile import fit_knots

    sums = [4.0, 1.0, 2.0, 3.0, 2.0, 0.0]
    measured = [3.6, 0.5, 1.5, 1.2, 1.3, 0.1]  # 3.0 reads below 2.0 (1.4): noise, pooled
    knots = fit_knots(sums, measured)
    np.testing.assert_allclose(knots, [[1.0, 0.5], [2.0, 1.3], [3.0, 1.3], [4.0, 3.6]])
    assert corrected_ms(2.5, 0.0, 1.0, knots) == pytest.approx(1.3)
    assert corrected_ms(3.5, 0.0, 1.0, knots) == pytest.approx(2.45)
    assert corrected_ms(0.5, 0.0, 1.0, knots) == pytest.approx(0.25)  # proportional
    assert corrected_ms(5.0, 0.0, 1.0, knots) == pytest.approx(4.5)
    xs = np.linspace(0.0, 6.0, 121)
    ys = [corrected_ms(x, 0.0, 1.0, knots) for x in xs]
    assert ys[0] == 0.0 and all(y2 >= y1 for y1, y2 in zip(ys, ys[1:], strict=False))
    assert corrected_ms(0.5, 0.2, 1.0) == pytest.approx(0.7)  # older profiles: the line


def test_new_profiles_predict_their_own_points_through_knots(profile) -> None:
    from onnx_amc.targets.predict import corrected_ms

    c = profile["correction"]
    assert len(c["knots"]) >= 2
    for x, y in c["knots"]:
        assert corrected_ms(x, c["a_ms"], c["b"], c["knots"]) == pytest.approx(y)


# -- profiles --------------------------------------------------------------------------------

def test_profile_records_device_and_units(profile, analysis) -> None:
    import onnxruntime as ort

    dev = profile["device"]
    assert dev["onnxruntime"] == ort.__version__
    assert dev["threads"] == 1 and dev["providers"][0] == "CPUExecutionProvider"
    for key in ("cpu", "cores", "machine", "python"):
        assert dev[key]
    assert profile["model"]["fingerprint"] == model_fingerprint(analysis)
    assert len(profile["units"]) == len(find_units(analysis))
    measured = [s[2] for u in profile["units"] for s in u["samples"]]
    assert all(v > 0 for v in measured), "a unit sample was not measured"
    assert profile["round_to_hint"]["round_to"] in (1, 2, 4, 8, 16, 32)
    assert profile["correction"]["b"] > 0


def test_profile_roundtrip(profile, tmp_path) -> None:
    path = tmp_path / "p.json"
    save_profile(profile, path)
    assert load_profile(path) == json.loads(json.dumps(profile))
    assert not list(tmp_path.glob(".*.tmp")), "atomic write left a temp file"


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update(format="something-else"), "format"),
    (lambda d: d.update(version=99), "version"),
    (lambda d: d.pop("correction"), "correction"),
    (lambda d: d["units"][0].update(samples=[[8, 8, -1.0]]), "sample"),
    (lambda d: d["units"][0].update(samples=[]), "samples"),
    (lambda d: d["model"].pop("fingerprint"), "fingerprint"),
    (lambda d: d["correction"].update(knots=[[2.0, 1.0], [1.0, 2.0]]), "knots"),
    (lambda d: d["correction"].update(knots=[[1.0, 2.0], [2.0, 1.0]]), "knots"),
    (lambda d: d["correction"].update(knots=[[1.0, -2.0]]), "knots"),
    # JSON true is a Python int: as in the samples, it is not a number here either
    (lambda d: d["correction"].update(a_ms=True), "correction"),
    (lambda d: d["correction"].update(knots=[[True, 2.0]]), "knots"),
])
def test_malformed_profile_is_one_input_error(profile, tmp_path, mutate, message) -> None:
    doc = copy.deepcopy(profile)
    mutate(doc)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(InputError, match=message) as err:
        load_profile(path)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("coef", [[True, 0.0, 0.0], [1.0, float("inf"), 0.0], [1.0, 2.0]])
def test_generic_profile_fits_are_three_numbers(tmp_path, coef) -> None:
    bundled = Path(__file__).parents[1] / "onnx_amc/targets/profiles/x86_64-host-ort1.32.0.json"
    doc = json.loads(bundled.read_text())
    assert validate_profile(copy.deepcopy(doc))["kind"] == "generic"
    doc["fits"][next(iter(doc["fits"]))] = coef
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))  # inf is written as Infinity, which json reads back
    with pytest.raises(InputError, match="fit '"):
        load_profile(path)


def test_not_json_and_missing_file(tmp_path) -> None:
    p = tmp_path / "x.json"
    p.write_text("{not json")
    with pytest.raises(InputError, match="not JSON"):
        load_profile(p)
    with pytest.raises(InputError, match="cannot read"):
        load_profile(tmp_path / "missing.json")


def test_profile_of_another_model_is_refused(profile) -> None:
    with pytest.raises(InputError, match="another model|not this model"):
        Predictor.from_profile(profile, _other_analysis())


def test_other_ort_version_warns(profile, tmp_path, caplog) -> None:
    doc = copy.deepcopy(profile)
    doc["device"]["onnxruntime"] = "0.0.1"
    path = tmp_path / "old.json"
    path.write_text(json.dumps(doc))
    with caplog.at_level(logging.WARNING):
        load_profile(path)
    assert "0.0.1" in caplog.text


# -- prediction ----------------------------------------------------------------------------

def test_prediction_monotone_in_channel_counts(predictor, analysis) -> None:
    full = predictor.predict_ms()
    for g in analysis.prunable_groups:
        prev = full
        for k in sorted({g.size, max(1, g.size * 3 // 4), max(1, g.size // 2),
                         max(1, g.size // 4)}, reverse=True):
            v = predictor.predict_ms({g.id: k})
            assert v <= prev + 1e-12, f"{g.id}: {k} channels predicted slower"
            prev = v
    every = {g.id: max(1, g.size // 4) for g in analysis.prunable_groups}
    assert predictor.predict_ms(every) < full


def test_prediction_within_loose_factor_of_measurement(predictor, analysis) -> None:
    plan = make_plan(analysis, {g.id: 0.5 for g in analysis.prunable_groups},
                     importance(analysis), round_to=8)
    for keep, model in ((None, analysis.model), (plan.keep, apply(analysis, plan))):
        measured = measure(model.SerializeToString(), threads=1).median_ms
        predicted = predictor.predict_keep(keep)
        assert measured / 2.5 < predicted < measured * 2.5, (predicted, measured)


def test_predict_ms_rejects_unknown_group(predictor) -> None:
    with pytest.raises(InputError, match="unknown channel group"):
        predictor.predict_ms({"no-such-group": 3})


def test_cost_fn_drives_the_action_wall(predictor, analysis) -> None:
    space = build_space(analysis)
    cost = predictor.cost_fn(space)
    budget = callable_budget("latency", 0.7, cost)
    assert budget.original == pytest.approx(predictor.predict_ms())
    chosen: list[float] = []
    for _ in range(space.num_groups):
        chosen.append(clamp_to_budget(budget, space, chosen, 1.0))
    assert budget.fits(cost(space.policy(chosen)))
    assert min(chosen) < 1.0, "a 70% latency budget must prune something"
    # Fast enough for the wall: well under 1 ms per call on fresh policies.
    rng = np.random.default_rng(0)
    policies = [space.policy(rng.uniform(0.2, 1.0, space.num_groups).tolist())
                for _ in range(200)]
    # The fast group-count path agrees with the keep-mask path.
    for p in policies[:20]:
        mask = space.keep_mask(space.keep_counts(space.ratios_of(p)))
        assert cost(p) == pytest.approx(predictor.predict_keep(mask), rel=1e-9)
    policies = [space.policy(rng.uniform(0.2, 1.0, space.num_groups).tolist())
                for _ in range(200)]
    t0 = time.perf_counter()
    for p in policies:
        cost(p)
    assert (time.perf_counter() - t0) / len(policies) < 1e-3


def test_estimate_cost_fn_is_relative_and_monotone(analysis) -> None:
    space = build_space(analysis)
    cost = estimate_cost_fn(space, analysis)
    assert cost({}) == pytest.approx(1.0)
    half = cost(space.policy([0.5] * space.num_groups))
    quarter = cost(space.policy([0.25] * space.num_groups))
    assert quarter < half < 1.0


# -- named targets -------------------------------------------------------------------------

def test_named_targets(profile, tmp_path) -> None:
    t = resolve_target("arm64")
    assert (t.kind, t.source, t.profile) == ("estimate", "estimated", None)
    assert "ESTIMATED, NOT MEASURED" in t.warning
    assert resolve_target(None).kind == "host"
    assert resolve_target("host").source == "measured"
    s = resolve_target("ssh://pi@raspberry:2222")
    assert (s.kind, s.url) == ("ssh", "ssh://pi@raspberry:2222")
    path = tmp_path / "dev.json"
    save_profile(profile, path)
    p = resolve_target(str(path))
    assert (p.kind, p.source) == ("profile", "predicted") and p.profile == load_profile(path)
    with pytest.raises(InputError):
        resolve_target(str(tmp_path / "missing.json"))
    with pytest.raises(InputError):
        resolve_target("bad name!")
    with pytest.raises(InputError):
        resolve_target("ssh://")


def test_bundled_profiles_are_measured_and_load() -> None:
    from onnx_amc.targets.named import bundled_names

    for name in bundled_names():
        t = resolve_target(name)
        assert t.kind == "named" and t.source == "predicted"
        assert t.profile["device"]["cpu"], "a bundled profile must say where it was measured"


# -- CLI -------------------------------------------------------------------------------------

def _cli():
    return _Group(name="onnx-amc", commands={"profile": profile_command})


def test_profile_command_writes_a_profile(tmp_path) -> None:
    out = tmp_path / "digits.json"
    res = CliRunner().invoke(_cli(), ["profile", "--model", str(DIGITS), "--out", str(out),
                                      "--time-budget", "6", "--input-shape",
                                      "input=1,1,32,32"])
    assert res.exit_code == 0, res.output
    assert "correction" in res.output and "round_to hint" in res.output
    prof = load_profile(out)
    Predictor.from_profile(prof, analyze(str(DIGITS), input_shapes=SHAPES))


@pytest.mark.parametrize("args, message", [
    (["--model", "missing.onnx", "--out", "x.json"], "does not exist"),
    (["--out", "no/such/folder/x.json"], "does not exist"),
    (["--out", "x.json", "--ep", "NoSuchExecutionProvider"], "not available"),
    (["--out", "x.json", "--input-shape", "input=a,b"], "input-shape"),
])
def test_profile_command_bad_input_exits_2(tmp_path, monkeypatch, args, message) -> None:
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(_cli(), ["profile", *args])
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert len(res.output.strip().splitlines()) == 1


def _shuffle_like(shape_op: str | None = None):
    """Conv then a Reshape to [1, 2, 4, H, W] whose target is computed from Shape(c) at run
    time, as torch exports ShuffleNet's channel shuffle; ``shape_op`` wraps the target in one
    more op (one that shape evaluation does not know makes the unit unmeasurable alone)."""
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(8, 8, 1, 1)).astype(
        np.float32), "w")
    head = numpy_helper.from_array(np.array([1, 2, 4], np.int64), "head")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node("Shape", ["c"], ["hw"], start=2),
             helper.make_node("Concat", ["head", "hw"], ["s0"], axis=0)]  # [1, 2, 4, H, W]
    nodes.append(helper.make_node(shape_op, ["s0"], ["s"]) if shape_op
                 else helper.make_node("Identity", ["s0"], ["s"]))
    nodes += [helper.make_node("Reshape", ["c", "s"], ["r"]),
              helper.make_node("Relu", ["r"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 8, 4, 4])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [1, 2, 4, 4, 4])], [w, head])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_reshape_to_a_shape_computed_at_run_time_is_timed() -> None:
    """The lifted unit gets the target evaluated on each pruned design, so ShuffleNet's
    channel-shuffle Reshapes are timed instead of counting 0 ms."""
    prof = build_profile(analyze(_shuffle_like()), time_budget_s=5, variants=2)
    reshapes = [u for u in prof["units"] if "Reshape" in u["ops"]]
    assert reshapes
    assert all(ms > 0 for u in reshapes for _, _, ms in u["samples"])


def test_unit_that_cannot_run_alone_is_one_warning_not_ort_error_spew(capfd, caplog) -> None:
    """A Reshape whose target shape evaluation cannot follow (here through Abs) gets an
    arbitrary shape when lifted alone: its time counts as 0 and the profile says so through
    logging, without ONNX Runtime's own error lines on stderr."""
    with caplog.at_level(logging.WARNING, logger="onnx_amc.targets.profile"):
        prof = build_profile(analyze(_shuffle_like("Abs")), time_budget_s=5, variants=2)
    assert "[E:onnxruntime" not in capfd.readouterr().err
    assert any("not measurable alone" in r.getMessage() for r in caplog.records)
    assert prof["correction"]["knots"]


def _dynamic_hw_model():
    """The digits model with symbolic height and width, as many detectors and OCR models
    are exported."""
    import onnx

    m = onnx.load(str(DIGITS))
    dims = m.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "h", "w"
    del m.graph.value_info[:]
    return m


def test_profile_of_dynamic_input_model_uses_pinned_shapes() -> None:
    m = _dynamic_hw_model()
    with pytest.raises(InputError, match="--input-shape"):
        build_profile(m, time_budget_s=5, variants=1, levels=2)
    doc = build_profile(m, input_shapes=SHAPES, time_budget_s=5, variants=1, levels=2)
    assert doc["model"]["input_shapes"] == {"input": [1, 1, 32, 32]}
    assert len(doc["correction"]["points"]) == 2
    assert doc["model"]["variants_measured"] == 1  # the original is the other point
    assert all(p["measured_ms"] > 0 for p in doc["correction"]["points"])
