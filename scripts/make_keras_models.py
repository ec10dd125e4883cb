#!/usr/bin/env python3
"""Build tiny Keras models and export them to ONNX with tf2onnx (test fixtures).

onnx-amc promises to prune ONNX graphs from *any* framework.  PyTorch exports are easy
to make inside the main venv; Keras exports are not, because TensorFlow is far too heavy
to be a dependency.  So this script is run by hand in a separate scratch venv and its
outputs are committed under ``tests/data/keras``:

* ``<name>_op13.onnx`` / ``<name>_op17.onnx`` - the tf2onnx export at opset 13 / 17,
  input NHWC (or [N, 64] for the MLP) with a dynamic batch dimension;
* ``<name>_op13.npz`` / ``<name>_op17.npz`` - a seeded random input (key: the ONNX
  input name) and the Keras output for it (key: ``expected``).

Models (all weights seeded; BN statistics, gammas, betas and all biases randomised so
that nothing is an identity and nothing folds away trivially):

* ``keras_cnn``       Conv(s2,'same')-BN-ReLU-MaxPool-Conv-BN-ReLU-Flatten-Dense-Dense(10)
* ``keras_resnet``    stem + identity residual block + strided block with a 1x1 projection
                      shortcut, a BN-ReLU after the last Add, GlobalAveragePooling2D,
                      Dense(10)
* ``keras_mobilenet`` stem, depthwise-separable block (ZeroPadding2D + strided
                      DepthwiseConv + 1x1 Conv, ReLU6), an inverted residual (expand /
                      depthwise / SE with 1x1 Convs / project, Add),
                      GlobalAveragePooling2D, Dense(10)
* ``keras_mlp``       Dense-BN-ReLU, Dense-ReLU, Dense(10) on [N, 64]

Every export is checked with onnxruntime against the Keras output (rtol 1e-4,
atol 1e-5) at batch 2, and again at batch 1 and 3 to prove the batch dim is dynamic.

Weights, inputs, expected outputs and graph structure are deterministic.  Generated
*names* are not always: tf2onnx's duplicate-constant merge keeps whichever of several
equal constants comes first in an order that varies from run to run, so e.g. the
shared Clip min/max initializers of ``keras_mobilenet`` can get different names (and
initializer order) on a re-run.  Nothing functional changes.

Regenerate with (scratch venv, never the project venv)::

    python3 -m venv /tmp/tfenv
    /tmp/tfenv/bin/pip install tensorflow-cpu==2.21.0 tf-keras==2.21.0 tf2onnx==1.17.0 \\
        onnx==1.23.2 onnxruntime==1.32.0 protobuf==7.36.2 numpy==2.4.6
    /tmp/tfenv/bin/python scripts/make_keras_models.py            # writes tests/data/keras
    /tmp/tfenv/bin/python scripts/make_keras_models.py --describe  # also prints graph notes

The models use ``tf_keras`` (Keras 2, selected with ``TF_USE_LEGACY_KERAS=1``), the
Keras that ``tf2onnx.convert.from_keras`` is written for.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import argparse  # noqa: E402
import collections  # noqa: E402
import pathlib  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf2onnx  # noqa: E402
import tf_keras as keras  # noqa: E402
from onnx import numpy_helper  # noqa: E402

SEED = 1234
OPSETS = (13, 17)
RTOL, ATOL = 1e-4, 1e-5
MAX_MODEL_BYTES = 300 * 1024
OUT_DIR = pathlib.Path(__file__).resolve().parent.parent / "tests" / "data" / "keras"
INPUT_NAME = "input"

L = keras.layers


# --------------------------------------------------------------------------- models


def build_cnn() -> keras.Model:
    inp = keras.Input((32, 32, 3), name=INPUT_NAME)
    x = L.Conv2D(8, 3, strides=2, padding="same", name="conv1")(inp)  # 32 -> 16, pads (0,1)
    x = L.BatchNormalization(name="bn1")(x)
    x = L.ReLU(name="relu1")(x)
    x = L.MaxPooling2D(2, name="pool1")(x)  # 16 -> 8
    x = L.Conv2D(16, 3, padding="same", name="conv2")(x)
    x = L.BatchNormalization(name="bn2")(x)
    x = L.ReLU(name="relu2")(x)
    x = L.Flatten(name="flatten")(x)  # channels-last order: index = (h*8 + w)*16 + c
    x = L.Dense(32, activation="relu", name="fc1")(x)
    out = L.Dense(10, name="fc2")(x)
    return keras.Model(inp, out, name="keras_cnn")


def _conv_bn(x, filters, kernel, strides=1, relu=True, name=""):
    x = L.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False,
                 name=f"{name}_conv")(x)
    x = L.BatchNormalization(name=f"{name}_bn")(x)
    if relu:
        x = L.ReLU(name=f"{name}_relu")(x)
    return x


def build_resnet() -> keras.Model:
    inp = keras.Input((32, 32, 3), name=INPUT_NAME)
    x = _conv_bn(inp, 16, 3, name="stem")
    # identity basic block (16 -> 16)
    y = _conv_bn(x, 16, 3, name="b1a")
    y = _conv_bn(y, 16, 3, relu=False, name="b1b")
    x = L.ReLU(name="b1_out")(L.Add(name="b1_add")([x, y]))
    # strided basic block (16 -> 32, /2) with a 1x1 strided projection shortcut
    y = _conv_bn(x, 32, 3, strides=2, name="b2a")
    y = _conv_bn(y, 32, 3, relu=False, name="b2b")
    s = _conv_bn(x, 32, 1, strides=2, relu=False, name="b2proj")
    x = L.Add(name="b2_add")([s, y])
    # ResNetV2-style post-activation BN after the Add: no Conv to fold it into
    x = L.BatchNormalization(name="post_bn")(x)
    x = L.ReLU(name="post_relu")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    out = L.Dense(10, name="fc")(x)
    return keras.Model(inp, out, name="keras_resnet")


def build_mobilenet() -> keras.Model:
    inp = keras.Input((32, 32, 3), name=INPUT_NAME)
    # stem
    x = L.Conv2D(16, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(inp)
    x = L.BatchNormalization(name="stem_bn")(x)
    x = L.ReLU(6.0, name="stem_relu6")(x)
    # depthwise-separable block (MobileNetV1 style): dw3x3/2-BN-ReLU6, pw1x1-BN-ReLU6;
    # the explicit ZeroPadding2D + 'valid' strided depthwise is how keras.applications
    # MobileNetV2 pads (16 -> 8)
    x = L.ZeroPadding2D(((0, 1), (0, 1)), name="ds_pad")(x)
    x = L.DepthwiseConv2D(3, strides=2, padding="valid", use_bias=False, name="ds_dw")(x)
    x = L.BatchNormalization(name="ds_dw_bn")(x)
    x = L.ReLU(6.0, name="ds_dw_relu6")(x)
    x = L.Conv2D(24, 1, use_bias=False, name="ds_pw")(x)
    x = L.BatchNormalization(name="ds_pw_bn")(x)
    x = L.ReLU(6.0, name="ds_pw_relu6")(x)
    # inverted residual (MobileNetV2/V3 style) with squeeze-excite, 24 -> 72 -> 24, Add
    shortcut = x
    y = L.Conv2D(72, 1, use_bias=False, name="ir_expand")(x)
    y = L.BatchNormalization(name="ir_expand_bn")(y)
    y = L.ReLU(6.0, name="ir_expand_relu6")(y)
    y = L.DepthwiseConv2D(3, padding="same", use_bias=False, name="ir_dw")(y)
    y = L.BatchNormalization(name="ir_dw_bn")(y)
    y = L.ReLU(6.0, name="ir_dw_relu6")(y)
    se = L.GlobalAveragePooling2D(keepdims=True, name="se_gap")(y)
    se = L.Conv2D(18, 1, activation="relu", name="se_reduce")(se)
    se = L.Conv2D(72, 1, activation="sigmoid", name="se_expand")(se)
    y = L.Multiply(name="se_mul")([y, se])
    y = L.Conv2D(24, 1, use_bias=False, name="ir_project")(y)
    y = L.BatchNormalization(name="ir_project_bn")(y)
    x = L.Add(name="ir_add")([shortcut, y])
    x = L.GlobalAveragePooling2D(name="gap")(x)
    out = L.Dense(10, name="fc")(x)
    return keras.Model(inp, out, name="keras_mobilenet")


def build_mlp() -> keras.Model:
    inp = keras.Input((64,), name=INPUT_NAME)
    x = L.Dense(48, name="fc1")(inp)
    x = L.BatchNormalization(name="bn1")(x)  # BN on a 2-D tensor
    x = L.ReLU(name="relu1")(x)
    x = L.Dense(32, activation="relu", name="fc2")(x)
    out = L.Dense(10, name="fc3")(x)
    return keras.Model(inp, out, name="keras_mlp")


BUILDERS = {
    "keras_cnn": build_cnn,
    "keras_resnet": build_resnet,
    "keras_mobilenet": build_mobilenet,
    "keras_mlp": build_mlp,
}


def randomize(model: keras.Model, rng: np.random.Generator) -> None:
    """Make BN non-trivial and biases non-zero (Keras initialises them to 1/0)."""
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            n = gamma.shape[0]
            layer.set_weights([
                rng.uniform(0.5, 1.5, n).astype(np.float32),
                rng.normal(0.0, 0.2, n).astype(np.float32),
                rng.normal(0.0, 0.2, n).astype(np.float32),
                rng.uniform(0.5, 2.0, n).astype(np.float32),
            ])
        elif isinstance(layer, (L.Conv2D, L.DepthwiseConv2D, L.Dense)) and layer.use_bias:
            w = layer.get_weights()
            w[1] = rng.normal(0.0, 0.1, w[1].shape).astype(np.float32)
            layer.set_weights(w)


# --------------------------------------------------------------------------- export


def export(model: keras.Model, opset: int) -> onnx.ModelProto:
    shape = (None,) + tuple(model.input_shape[1:])
    spec = (tf.TensorSpec(shape, tf.float32, name=INPUT_NAME),)
    # tf2onnx numbers generated names with a process-global counter; restart it so a
    # model's file does not depend on what was exported before it in the same run.
    tf2onnx.utils.INTERNAL_NAME = 1
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=opset)
    return proto


def run_onnx(proto: onnx.ModelProto, feeds: dict) -> np.ndarray:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(proto.SerializeToString(), so,
                                providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


def make_one(name: str, out_dir: pathlib.Path) -> list[pathlib.Path]:
    keras.backend.clear_session()
    keras.utils.set_random_seed(SEED)
    model = BUILDERS[name]()
    rng = np.random.default_rng(SEED)
    randomize(model, rng)
    in_shape = tuple(model.input_shape[1:])
    x = rng.standard_normal((2,) + in_shape).astype(np.float32)
    expected = model(x, training=False).numpy()
    written = []
    for opset in OPSETS:
        proto = export(model, opset)
        onnx.checker.check_model(proto, full_check=True)
        in_name = proto.graph.input[0].name
        dims = proto.graph.input[0].type.tensor_type.shape.dim
        if dims[0].HasField("dim_value"):
            raise RuntimeError(f"{name} op{opset}: batch dim is static: {dims[0]}")
        got = run_onnx(proto, {in_name: x})
        np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL,
                                   err_msg=f"{name} op{opset}")
        for b in (1, 3):  # dynamic batch really works
            xb = rng.standard_normal((b,) + in_shape).astype(np.float32)
            np.testing.assert_allclose(run_onnx(proto, {in_name: xb}),
                                       model(xb, training=False).numpy(),
                                       rtol=RTOL, atol=ATOL, err_msg=f"{name} op{opset} b{b}")
        stem = out_dir / f"{name}_op{opset}"
        onnx_path = stem.with_suffix(".onnx")
        onnx.save(proto, onnx_path)
        if onnx_path.stat().st_size > MAX_MODEL_BYTES:
            raise RuntimeError(f"{onnx_path} is {onnx_path.stat().st_size} bytes")
        npz_path = stem.with_suffix(".npz")
        np.savez_compressed(npz_path, **{in_name: x, "expected": expected})
        err = float(np.max(np.abs(got - expected)))
        print(f"{onnx_path.name}: {onnx_path.stat().st_size} B, input {in_name!r}, "
              f"max|ort-keras| = {err:.2e}, params {model.count_params()}")
        written += [onnx_path, npz_path]
    return written


# --------------------------------------------------------------------------- describe


def describe(path: pathlib.Path) -> str:
    """Markdown notes on the structure tf2onnx produced (for the README)."""
    m = onnx.load(path)
    g = m.graph
    inits = {t.name: t for t in g.initializer}
    producers = {o: n for n in g.node for o in n.output}
    consumers = collections.defaultdict(list)
    for n in g.node:
        for i in n.input:
            consumers[i].append(n)
    lines = [f"### {path.name}", ""]
    ins = [(i.name, [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim])
           for i in g.input]
    outs = [(o.name, [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim])
            for o in g.output]
    lines.append(f"- inputs {ins}, outputs {outs}, opset "
                 f"{[(o.domain or 'ai.onnx', o.version) for o in m.opset_import]}, "
                 f"{len(g.node)} nodes, {len(g.initializer)} initializers")
    hist = collections.Counter(n.op_type for n in g.node)
    lines.append("- op histogram: " + ", ".join(f"{k} x{v}" for k, v in sorted(hist.items())))
    lines.append("- node sequence (topological, as stored):")
    for n in g.node:
        attrs = []
        for a in n.attribute:
            v = onnx.helper.get_attribute_value(a)
            if isinstance(v, bytes):
                v = v.decode()
            if isinstance(v, onnx.TensorProto):
                v = f"tensor{list(v.dims)}"
            attrs.append(f"{a.name}={v}")
        ins_s = []
        for i in n.input:
            if i in inits:
                t = inits[i]
                if t.data_type == onnx.TensorProto.INT64 and len(t.dims) <= 1:
                    ins_s.append(f"const{numpy_helper.to_array(t).tolist()}")
                else:
                    ins_s.append(f"W{list(t.dims)}")
            elif i in producers:
                ins_s.append(producers[i].op_type)
            else:
                ins_s.append(i or "''")
        lines.append(f"  - `{n.op_type}`({', '.join(ins_s)})"
                     + (f" {{{', '.join(attrs)}}}" if attrs else ""))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=pathlib.Path, default=OUT_DIR)
    ap.add_argument("--only", choices=sorted(BUILDERS), action="append")
    ap.add_argument("--describe", action="store_true",
                    help="print per-model structure notes (markdown) after exporting")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"tensorflow {tf.__version__}, tf_keras {keras.__version__}, "
          f"tf2onnx {tf2onnx.__version__}, onnx {onnx.__version__}, "
          f"onnxruntime {ort.__version__}, numpy {np.__version__}")
    written = []
    for name in args.only or BUILDERS:
        written += make_one(name, args.out)
    total = sum(p.stat().st_size for p in args.out.iterdir() if p.is_file())
    print(f"total size of {args.out}: {total} B")
    if args.describe:
        for p in written:
            if p.suffix == ".onnx":
                print(describe(p))
    return 0


if __name__ == "__main__":
    sys.exit(main())
