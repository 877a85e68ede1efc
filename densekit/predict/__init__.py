"""Predictions on users' own files (``scripts/predict.py``, ``densekit-predict``): input collection
(``sources``), the files written per task (``outputs``), the ONNX Runtime backend (``backend``) and the
command itself (``command``). Hydra-free: the options arrive as a plain dict."""

from .command import OPTIONS, predict_options, run_predict

__all__ = ["OPTIONS", "predict_options", "run_predict"]
