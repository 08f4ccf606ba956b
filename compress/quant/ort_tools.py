"""ONNX Runtime's `onnxruntime.tools` package, imported without torch.

`quant_pre_process` imports `onnxruntime.tools.symbolic_shape_infer`, and the package's
`__init__` imports its torch export helpers whenever torch is installed: 2.7 s of every int8
run on an ONNX model (a run that never touches torch otherwise), spent for a function nothing
here calls. `import_without_torch()` puts a stand-in for that helper module in its place while the
package is imported; the stand-in's function imports the real one if it is ever called.
"""

from __future__ import annotations

import importlib
import sys
import types

_HELPERS = "onnxruntime.tools.pytorch_export_helpers"


def _infer_input_info(*args: object, **kwargs: object) -> object:
    """The stand-in for the helpers' one export: imports the real module when called (by then
    the stand-in has left sys.modules: nothing calls it while the package is imported)."""
    return importlib.import_module(_HELPERS).infer_input_info(*args, **kwargs)


def import_without_torch() -> None:
    """Import `onnxruntime.tools` now, without torch (nothing to do where it is imported
    already or where torch is): later imports of its modules then find it as it is."""
    if "onnxruntime.tools" in sys.modules or "torch" in sys.modules or _HELPERS in sys.modules:
        return
    sys.modules[_HELPERS] = types.SimpleNamespace(infer_input_info=_infer_input_info)  # type: ignore[assignment]
    try:
        importlib.import_module("onnxruntime.tools")
    finally:
        del sys.modules[_HELPERS]
