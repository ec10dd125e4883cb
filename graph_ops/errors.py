"""Errors raised by graph_ops; callers turn them into one-line messages."""


class GraphOpsError(Exception):
    """Base class: the input model or request cannot be handled as asked."""


class ModelLoadError(GraphOpsError):
    """The file is missing, not ONNX, truncated, or points outside its folder."""


class PolicyError(GraphOpsError):
    """A pruning policy names unknown groups, bad ratios or impossible index sets."""
