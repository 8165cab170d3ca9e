"""The export's defaults, importable without TensorFlow (the program's --help shows them)."""

from __future__ import annotations

# Opset 17: the newest tf2onnx 1.17 maps fully; within what onnxruntime and TensorRT parse.
DEFAULT_OPSET = 17
OPSETS = range(13, 19)
# Batch sizes of the warmup requests TF Serving replays before a version serves.
DEFAULT_WARMUP_BATCH_SIZES = (1, 8)
