"""Predict on your own files with a trained densekit checkpoint; the task comes from the checkpoint.

    python scripts/predict.py ckpt=<ckpt> input=<file|folder|glob|video> output=<dir> [key=value ...]
    densekit-predict ckpt=... input=... output=...        (the same, as a console script)

seg: <name>_labels.png (palette) + <name>_overlay.png; depth: <name>_depth.png (16-bit millimetres; format=npy
for float metres) + <name>_depth_color.png; flow: consecutive frames of a folder/glob or a video ->
<name>_flow.flo + <name>_flow.png per pair (+ <video>_flow.mp4); volume: NIfTI files or nnU-Net channel sets
(<case>_0000.nii.gz ...) -> <case>.nii.gz labels with the input's affine.

Options (defaults in densekit/console.py, PredictConfig): batch_size=1 device=auto mode=whole|slide crop= stride=
flip=false scales=[1.0] roi= overlap=0.5 backend=torch|onnx onnx=<file> strict=false overwrite=false
progress=true alpha=0.5 format=png|npy depth_scale=1000 max_flow= fps=. What runs is
``densekit.predict.command``. Unreadable inputs are skipped, counted and listed at the end (strict=true stops);
outputs never overwrite inputs or an earlier run's files (overwrite=true replaces the latter). Errors are one
line (``densekit.cli``); ``debug=true`` shows the traceback. Hydra writes nothing (no run directory, no log).
"""

from densekit.cli import hydra_entry
from densekit.console import predict_main

if __name__ == "__main__":
    hydra_entry(predict_main)
