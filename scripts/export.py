"""Export a densekit checkpoint to ONNX or TorchScript and check it against the eager model.

    python scripts/export.py ckpt=<path> [format=onnx|torchscript] [output=<file>] [height=512] [width=512]
        [dynamic=true] [reparameterize=true] [device=cpu] [opset=17] [dynamo=false] [repeats=5] [threads=N]
        [depth=D]   (volume checkpoints: the slices of the example volume; default the training patch's)

The options and their defaults are conf/export.yaml; what runs is ``densekit.export.command``. The task (and
so the inputs: image | image1, image2 | volume, and the output: logits | depth | flow) comes from the
checkpoint. The model is re-parameterised (MobileOne/RepMixer branches fused) unless ``reparameterize=false``,
exported at height x width (dynamic batch, and dynamic height/width unless ``dynamic=false``), then run on a
random test input: the max abs difference to eager (also at a second size when dynamic) and the eager vs
ONNX Runtime (or TorchScript) latency medians are printed. The default output sits next to the checkpoint:
``<ckpt stem>.onnx`` / ``.ts``. Hydra writes nothing (no run directory, no .hydra/, no log file).

Values follow Hydra's override grammar (train.py's): quote a path that holds ``=`` or ``,``
(``ckpt='runs/epoch=1-step=200.ckpt'``); ``ckpt=true`` or ``output=17`` are taken as those file names.

Checked before the model is loaded: every option's type (booleans are ``true``/``false`` only) and that the
output location is writable (a probe file; an existing output must be replaceable) and is not the checkpoint.
Errors are one line (``densekit.cli``: exit status 2 for a wrong option, 1 for a missing/unreadable/unwritable
file); ``debug=true`` or ``HYDRA_FULL_ERROR=1`` shows the traceback.
"""

import hydra
from omegaconf import DictConfig, OmegaConf

from densekit.cli import hydra_entry, report_errors


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
def main(cfg: DictConfig) -> dict:
    with report_errors():
        # imported here: a wrong override is reported by Hydra before torch is loaded
        from densekit.export.command import export_checkpoint, export_options

        return export_checkpoint(export_options(OmegaConf.to_container(cfg, resolve=True)))


if __name__ == "__main__":
    hydra_entry(main)
