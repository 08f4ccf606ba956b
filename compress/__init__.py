"""compress: turn a saved PyTorch model into one checked, measured ONNX file.

The library never imports typer; heavy dependencies (torch, onnxruntime) are imported where used,
so that listing passes or validating a config stays fast.
"""

__version__ = "0.1.0"
