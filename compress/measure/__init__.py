"""Measurements of an ONNX model in ONNX Runtime: size, latency, and accuracy or fidelity."""
