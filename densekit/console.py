"""Console scripts (``[project.scripts]`` in pyproject.toml): ``densekit-train``, ``densekit-evaluate``,
``densekit-export``, ``densekit-inspect`` and ``densekit-predict``.

``densekit-predict`` is complete in the package: its options are a Hydra structured config registered here
(``PredictConfig``; no YAML file needed), so it works from an installed wheel as from a checkout. The other
four run the checkout's entry points (train.py, scripts/*.py), whose configs are the checkout's conf/ tree;
from an installed package without a checkout they say so in one line.
"""

from __future__ import annotations

import runpy
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from .cli import hydra_entry, report_errors

CHECKOUT = Path(__file__).resolve().parents[1]


# Every field is Any: densekit.predict.command.OPTIONS checks the types (booleans true/false only), with
# densekit's one-line messages, instead of OmegaConf's coercions (which take yes/on/1 as true).
@dataclass
class PredictConfig:
    defaults: list[Any] = field(
        default_factory=lambda: [
            "_self_",
            {"override hydra/job_logging": "none"},
            {"override hydra/hydra_logging": "none"},
        ]
    )
    ckpt: Any = "???"  # the checkpoint (.ckpt of a densekit run): it says the task
    input: Any = "???"  # a file, a folder (its files), a glob pattern, or a video (flow)
    output: Any = "???"  # the folder the results go to (not inside an input folder)
    format: Any = "png"  # depth: png (16-bit, round(metres * depth_scale)) | npy (float32 metres)
    depth_scale: Any = 1000.0  # depth PNG units per metre: 1000 = millimetres (65.5 m max), 256 = KITTI's
    batch_size: Any = 1  # images of one size that go through the network together
    device: Any = "auto"  # auto (cuda when there is one) | cpu | cuda | cuda:<n>
    mode: Any = "whole"  # seg/depth: whole | slide (sliding window of crop=[h,w], stride=[h,w])
    crop: Any = None
    stride: Any = None
    flip: Any = False  # horizontal flip TTA (flow: both frames flipped, u negated)
    scales: Any = field(default_factory=lambda: [1.0])  # multi-scale TTA factors (2D tasks)
    roi: Any = None  # volume: the sliding window [d,h,w] (null: the training patch)
    overlap: Any = 0.5  # volume: the window overlap
    backend: Any = "torch"  # torch | onnx (ONNX Runtime on an exported file, checked against torch first)
    onnx: Any = None  # backend=onnx: the exported file (null: <ckpt stem>.onnx beside the checkpoint)
    strict: Any = False  # stop at the first unreadable input instead of skipping, counting and listing it
    overwrite: Any = False  # replace the files of an earlier run in output=
    progress: Any = True  # the progress bar (with ETA) on stderr
    alpha: Any = 0.5  # seg overlay opacity
    max_flow: Any = None  # flow colours: the magnitude of full colour (null: each pair's largest)
    fps: Any = None  # flow video: frames per second of the mp4 (null: the input's)
    hydra: Any = field(default_factory=lambda: {"run": {"dir": "."}, "output_subdir": None, "job": {"chdir": False}})


ConfigStore.instance().store(name="densekit_predict", node=PredictConfig)


@hydra.main(version_base="1.3", config_path=None, config_name="densekit_predict")
def predict_main(cfg: DictConfig) -> dict:
    with report_errors():
        from .predict.command import predict_options, run_predict

        config = OmegaConf.to_container(cfg, resolve=False)
        config.pop("defaults", None)
        return run_predict(predict_options(config))


def predict() -> None:
    hydra_entry(predict_main)


def _checkout_script(relative: str) -> None:
    script = CHECKOUT / relative
    if not script.is_file() or not (CHECKOUT / "conf").is_dir():
        sys.exit(
            f"{Path(sys.argv[0]).name} runs densekit's {relative} and its conf/ tree, which an installed package "
            "does not hold: use it from a checkout (git clone ...; pip install -e .); densekit-predict works anywhere"
        )
    sys.argv[0] = str(script)
    runpy.run_path(str(script), run_name="__main__")


def train() -> None:
    _checkout_script("train.py")


def evaluate() -> None:
    _checkout_script("scripts/evaluate.py")


def export() -> None:
    _checkout_script("scripts/export.py")


def inspect() -> None:
    _checkout_script("scripts/inspect_data.py")
