"""Reading models safely and normalising them into one view.

Why a module of its own: exporters disagree on where weights live (initializers, Constant nodes,
graph inputs in old IRs, external files), and every later stage should see one shape of model.
"""

from __future__ import annotations

import heapq
import os
from pathlib import Path

import onnx
from onnx import external_data_helper

from .errors import ModelLoadError

__all__ = ["load_model", "save_model", "sorted_nodes", "write_atomic"]


def _check_external_locations(model: onnx.ModelProto, base_dir: Path) -> None:
    """Refuse external-data paths that resolve outside the model's folder (path traversal)."""
    base = base_dir.resolve()
    for tensor in external_data_helper._get_all_tensors(model):
        if not external_data_helper.uses_external_data(tensor):
            continue
        info = {e.key: e.value for e in tensor.external_data}
        location = info.get("location", "")
        if not location or os.path.isabs(location):
            raise ModelLoadError(
                f"external data of tensor '{tensor.name}' has location '{location}': "
                "only relative paths inside the model's folder are allowed"
            )
        target = (base / location).resolve()
        if base != target and base not in target.parents:
            raise ModelLoadError(
                f"external data of tensor '{tensor.name}' points outside the model's folder: "
                f"'{location}'"
            )
        if not target.is_file():
            raise ModelLoadError(
                f"external data file '{location}' of tensor '{tensor.name}' does not exist"
            )


def load_model(source: str | os.PathLike[str] | bytes | onnx.ModelProto) -> onnx.ModelProto:
    """Load a model from a path or serialized bytes; a ModelProto is returned as is (not copied:
    callers must not mutate it while an analysis of it is in use).

    External data is loaded only from inside the model's folder.
    """
    if isinstance(source, onnx.ModelProto):
        _require_graph(source, "<model>")
        return source
    if isinstance(source, bytes | bytearray):
        model = onnx.ModelProto()
        try:
            model.ParseFromString(bytes(source))
        except Exception as exc:  # protobuf raises DecodeError and friends
            raise ModelLoadError(f"not a valid ONNX model ({exc.__class__.__name__})") from None
        _require_graph(model, "<bytes>")
        return model
    path = Path(source)
    if not path.exists():
        raise ModelLoadError(f"{path}: no such file")
    if not path.is_file():
        raise ModelLoadError(f"{path}: not a file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelLoadError(f"{path}: cannot read ({exc.strerror})") from None
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception:
        raise ModelLoadError(f"{path}: not an ONNX model (truncated or not a protobuf)") from None
    _require_graph(model, str(path))
    if any(
        external_data_helper.uses_external_data(t)
        for t in external_data_helper._get_all_tensors(model)
    ):
        _check_external_locations(model, path.parent)
        try:
            external_data_helper.load_external_data_for_model(model, str(path.parent))
        except Exception as exc:
            raise ModelLoadError(f"{path}: cannot read external data ({exc})") from None
    return model


def _require_graph(model: onnx.ModelProto, where: str) -> None:
    if not model.HasField("graph") or len(model.graph.node) == 0:
        raise ModelLoadError(f"{where}: not an ONNX model (no graph nodes)")
    if not model.opset_import:
        raise ModelLoadError(f"{where}: not an ONNX model (no opset_import)")


def sorted_nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """The graph's nodes in topological order (Kahn, stable; the list as is when already
    sorted). Never mutates the graph: stale value_info is simply never read or written."""
    nodes = list(graph.node)
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    produced_by: dict[str, int] = {}
    for idx, node in enumerate(nodes):
        for out in node.output:
            produced_by[out] = idx
    seen = set(available)
    for node in nodes:
        if any(i not in seen and i in produced_by for i in node.input):
            break
        seen.update(node.output)
    else:
        return nodes
    waiting = [0] * len(nodes)
    users: dict[int, list[int]] = {}
    for idx, node in enumerate(nodes):
        deps = {produced_by[i] for i in node.input if i in produced_by and i not in available}
        waiting[idx] = len(deps)
        for d in deps:
            users.setdefault(d, []).append(idx)
    ready = [i for i, w in enumerate(waiting) if w == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        idx = heapq.heappop(ready)
        order.append(idx)
        for u in users.get(idx, ()):
            waiting[u] -= 1
            if waiting[u] == 0:
                heapq.heappush(ready, u)
    if len(order) != len(nodes):
        raise ModelLoadError("the graph has a cycle")
    return [nodes[i] for i in order]


def write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write atomically: a temp file in the same folder, fsync, then os.replace; the temp file
    is removed on any failure, so a reader never sees a half-written file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_model(model: onnx.ModelProto, path: str | os.PathLike[str]) -> None:
    """Serialise and write atomically (see :func:`write_atomic`)."""
    write_atomic(path, model.SerializeToString())
