"""The correctness contract on real exports: Keras via tf2onnx, pretrained packaged models."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from graph_ops import analyze, prunable_mac_share
from tests.oracle import assert_prunes_exactly
from tests.packaged import available

KERAS = sorted((Path(__file__).parent / "data" / "keras").glob("*.onnx"))


@pytest.mark.parametrize("path", KERAS, ids=[p.stem for p in KERAS])
def test_keras_exports_prune_exactly(path: Path) -> None:
    a = assert_prunes_exactly(onnx.load(str(path)))
    # Keras heads are Dense layers: everything but the logits is prunable.
    assert prunable_mac_share(a) == pytest.approx(1.0)


PACKAGED = available()


@pytest.mark.skipif(not PACKAGED, reason="no packaged pretrained models installed (extra: models)")
@pytest.mark.parametrize("entry", PACKAGED, ids=[m.name for m, _ in PACKAGED])
def test_packaged_models_prune_exactly(entry) -> None:
    pm, path = entry
    model = onnx.load(str(path))
    a = assert_prunes_exactly(model, input_shapes=pm.input_shapes, seeds=(0,))
    assert prunable_mac_share(a) > 0.8


def test_paddle_constant_node_weights_are_sliced_in_place() -> None:
    entry = [e for e in PACKAGED if e[0].name == "ppocr_mobile_v2_cls"]
    if not entry:
        pytest.skip("rapidocr-onnxruntime not installed")
    pm, path = entry[0]
    model = onnx.load(str(path))
    assert not model.graph.initializer  # weights live in Constant nodes
    a = analyze(model, input_shapes=pm.input_shapes)
    assert len(a.prunable_groups) > 10
