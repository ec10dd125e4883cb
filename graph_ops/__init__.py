"""Pure ONNX graph surgery for structured channel pruning.

Depends only on onnx, numpy and onnx-graphsurgeon: no ONNX Runtime, no RL.
"""
