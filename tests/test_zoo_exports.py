"""The zoo's ONNX files must be valid and numerically equal to the torch models they came from.

Every pruning test trusts these files as ground truth, so a broken export (wrong BN mode,
stale cache, lost dynamic batch) has to fail here rather than as a confusing pruning bug.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from tests import zoo
from tests.zoo import architectures, export

CASES = [(n, o, b) for n in zoo.NAMES for o in zoo.OPSETS for b in zoo.BN_MODES]


@cache
def _torch_outputs(name: str) -> tuple[np.ndarray, ...]:
    """Reference outputs on the batch-2 sample inputs (batch 2 also exercises the dynamic axis)."""
    model = zoo.torch_model(name)
    feeds = zoo.sample_inputs(name)
    with torch.no_grad(), export.single_thread():
        out = model(*(torch.from_numpy(v) for v in feeds.values()))
    outs = out if isinstance(out, tuple) else (out,)
    return tuple(o.numpy() for o in outs)


def _bn_after_conv(model: onnx.ModelProto) -> int:
    """BN nodes whose input is a Conv output used only by that BN: what the exporter fuses."""
    producers = {o: n for n in model.graph.node for o in n.output}
    uses: dict[str, int] = {}
    for n in model.graph.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    return sum(
        n.op_type == "BatchNormalization"
        and n.input[0] in producers
        and producers[n.input[0]].op_type == "Conv"
        and uses[n.input[0]] == 1
        for n in model.graph.node
    )


@pytest.mark.parametrize(
    ("name", "opset", "bn"), CASES, ids=[f"{n}-op{o}-{b}" for n, o, b in CASES]
)
def test_export_valid_and_matches_torch(name: str, opset: int, bn: str) -> None:
    path = zoo.model_path(name, opset, bn)
    onnx.checker.check_model(str(path), full_check=True)
    model = onnx.load(str(path), load_external_data=False)
    assert model.opset_import[0].version == opset

    assert [i.name for i in model.graph.input] == list(zoo.input_shapes(name))
    assert tuple(o.name for o in model.graph.output) == zoo.output_names(name)
    for value in (*model.graph.input, *model.graph.output):
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch", value.name

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    got = sess.run(None, zoo.sample_inputs(name))
    want = _torch_outputs(name)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("opset", zoo.OPSETS)
@pytest.mark.parametrize("name", [n for n in zoo.NAMES if zoo.has_bn(n)])
def test_bn_modes(name: str, opset: int) -> None:
    """kept: one BatchNormalization per torch BN; folded: only BNs no Conv could absorb."""
    kept = onnx.load(str(zoo.model_path(name, opset, "kept")), load_external_data=False)
    folded = onnx.load(str(zoo.model_path(name, opset, "folded")), load_external_data=False)
    n_torch = zoo.num_batchnorm(name)
    assert export.count_bn(kept) == n_torch > 0
    assert export.count_bn(folded) == n_torch - _bn_after_conv(kept)
    if name != "densenet":  # DenseNet's pre-activation BNs follow a Concat: nothing to fuse into
        assert export.count_bn(folded) == 0
    kept_ops = [n.op_type for n in kept.graph.node if n.op_type != "BatchNormalization"]
    folded_ops = [n.op_type for n in folded.graph.node if n.op_type != "BatchNormalization"]
    assert kept_ops == folded_ops  # the two modes differ by BN nodes only


def test_mlps_have_no_bn() -> None:
    assert not zoo.has_bn("mlp_gemm")
    assert not zoo.has_bn("mlp_matmul")


def test_torch_macs() -> None:
    # 64*256 + 256*256 + 256*10, counted by hand
    assert zoo.torch_macs("mlp_gemm") == 84480
    # per token: 32*128 + 128*512 + 512*128 + 128*10, times T=8
    assert zoo.torch_macs("mlp_matmul") == 8 * (4096 + 65536 + 65536 + 1280)
    assert zoo.torch_macs("resnet18") > zoo.torch_macs("mobilenet_v2") > 0


@pytest.mark.parametrize(
    ("factory", "params"),
    [
        # torchvision's published parameter counts (1000 classes): the hand-written models
        # must have the real widths, or pruning and latency results describe another network.
        (lambda: architectures.resnet18(), 11_689_512),
        (lambda: architectures.MobileNetV2(), 3_504_872),
        (lambda: architectures.MobileNetV3Small(), 2_542_856),
        (lambda: architectures.MobileNetV3Large(), 5_483_032),
    ],
    ids=["resnet18", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large"],
)
def test_parameter_counts_match_torchvision(factory, params: int) -> None:
    assert sum(p.numel() for p in factory().parameters()) == params


def test_cache_location_and_key(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONNX_AMC_ZOO_CACHE", str(tmp_path))
    path = zoo.model_path("mlp_gemm", 13, "kept")
    assert path.is_file() and tmp_path in path.parents
    assert export.source_hash() in str(path) and "opset13" in path.name and "kept" in path.name
    assert not [p for p in path.parent.iterdir() if p.suffix == ".tmp"]
    mtime = path.stat().st_mtime_ns
    assert zoo.model_path("mlp_gemm", 13, "kept") == path
    assert path.stat().st_mtime_ns == mtime  # second call is a cache hit


def test_unknown_arguments_rejected() -> None:
    with pytest.raises(KeyError):
        zoo.model_path("alexnet")
    with pytest.raises(ValueError):
        zoo.model_path("mlp_gemm", 17, "fused")
