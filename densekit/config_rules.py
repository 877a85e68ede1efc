"""Which config key takes which value: the rule tables of the run-level config groups.

``TOP`` (top-level keys of conf/train.yaml), ``DATA_COMMON`` (every data config; ``data.size`` follows the
task's dims in ``densekit.config_schema``), ``AUGMENT_2D`` / ``AUGMENT_FLOW`` / ``AUGMENT_3D`` (``data.augment``
per augmenter: image, flow and volume transforms), ``OPTIM``, ``TRAINER``,
``LOGGER`` and ``TASK``. ``TASK_DIMS`` and ``TASK_AUGMENT`` repeat two facts of the task classes so that the
check runs without importing torch; a test keeps them equal to the classes'. The backbone and head tables
are in ``densekit.config_model_rules``.

Adding a key to a YAML in conf/: add its rule here (a key without a rule is not checked).
"""

from __future__ import annotations

import re
from typing import Any

from .config_types import (
    NONNEG,
    NONNEG_NUM,
    PATH,
    POS,
    POS_NUM,
    Rule,
    boolean,
    choice,
    format_value,
    int_list,
    integer,
    is_num,
    list_of,
    mapping,
    nullable,
    number,
    one_of,
    pair,
    prob,
    string,
)

__all__ = [
    "AUGMENT_2D",
    "AUGMENT_3D",
    "AUGMENT_FLOW",
    "DATA_COMMON",
    "LOGGER",
    "OPTIM",
    "PRECISIONS",
    "TASK",
    "TASK_AUGMENT",
    "TASK_DIMS",
    "TOP",
    "TRAINER",
    "cross_checks",
]

# Lightning's precision names (lightning_fabric.connector: _PRECISION_INPUT_STR, its aliases and ints).
PRECISIONS = (
    "transformer-engine",
    "transformer-engine-float16",
    "16-true",
    "16-mixed",
    "bf16-true",
    "bf16-mixed",
    "32-true",
    "64-true",
    "64",
    "32",
    "16",
    "bf16",
    64,
    32,
    16,
)

NAMES = list_of(one_of(string(), integer()), what="a list of names")

TOP = {
    "seed": integer(what="an int"),
    "output_dir": nullable(PATH),
    "ckpt_path": nullable(PATH),
    "init_from": nullable(PATH),
    "init_required": nullable(string()),
    "nonfinite": choice("raise", "skip"),
    "resume": nullable(choice("auto")),
    "overwrite": boolean(),
    "threads": one_of(integer(1, what="an int >= 1"), choice("auto")),
    "checkpoint": mapping(
        {
            "every_n_train_steps": NONNEG,
            "save_last": boolean(),
            "best_weights_only": boolean(),
            "share_best_with_last": boolean(),
        }
    ),
}

DATA_COMMON = {
    "name": string(),
    "root": PATH,
    "num_classes": nullable(integer(2, what="an int >= 2")),
    "class_names": nullable(NAMES),
    "classes": nullable(one_of(NAMES, PATH)),
    "ignore_index": integer(0, 255, what="an int in [0, 255]"),
    "resize": nullable(integer(8, what="an int >= 8 (short side in pixels)")),
    "skip_bad": boolean(),
    "train_length": nullable(POS),
    "val_length": nullable(POS),
    "batch_size": integer(1, what="an int >= 1"),
    "val_batch_size": nullable(integer(1, what="an int >= 1")),
    "num_workers": one_of(NONNEG, choice("auto")),
    "seed": integer(what="an int"),
    "fit_crop": boolean(),
    "label_map": nullable(mapping(what="a mapping {raw value: train id}")),
    "palette": nullable(list_of(int_list(3, lo=0), what="a list of [r, g, b] colours")),
    # volumes
    "patch": nullable(int_list(3, axes="[D, H, W]")),
    "val_patch": nullable(int_list(3, axes="[D, H, W]")),
    "fg_prob": prob(),
    "channels": nullable(POS),
    "labels": nullable(string()),
    "naming": choice("brats2021", "brats2023"),
    "modalities": nullable(list_of(string(), what="a list of modality names")),
    "split_file": nullable(PATH),
    "fold": NONNEG,
    "val_fraction": number(gt=0, lt=1),
    "affine_atol": NONNEG_NUM,
    # depth
    "depth_scale": POS_NUM,
    "min_depth": NONNEG_NUM,
    "max_depth": POS_NUM,
    "eval_crop": nullable(choice("eigen_nyu", "garg", "eigen_kitti")),
    "kb_crop": one_of(boolean(), choice("train")),
    "lists": nullable(one_of(mapping(), PATH)),
    "raw_dir": PATH,
    "depth_dir": PATH,
    "mat_file": PATH,
    "depth_key": choice("depths", "rawDepths"),
    # flow
    "max_flow": nullable(POS_NUM),
    "sparse": nullable(boolean()),
    "flow_gt": choice("occ", "noc"),
    "val_ids": nullable(int_list(lo=0)),
    "pass": choice("clean", "final"),
    "val_scenes": nullable(list_of(string(), what="a list of scene names")),
    "cameras": list_of(choice("left", "right"), what="a list of left/right", min_len=1),
    "directions": list_of(choice("into_future", "into_past"), what="a list of into_future/into_past", min_len=1),
    "max_samples": nullable(POS),
    # the embedded scenes' generator knobs (densekit.data.synthetic.scenes.SceneConfig)
    "scene": nullable(
        mapping(
            {
                "min_objects": POS,
                "max_objects": POS,
                "camouflage": prob(),
                "hue_jitter": NONNEG_NUM,
                "min_depth": POS_NUM,
                "max_depth": POS_NUM,
                "focal": POS_NUM,
                "max_flow": NONNEG_NUM,
                "max_rotation": NONNEG_NUM,
                "max_depth_change": number(ge=0, lt=1, what="a fraction in [0, 1)"),
                "background_pan": NONNEG_NUM,
                "noise": NONNEG_NUM,
                "motion": choice("uniform", "heavy"),
                "min_flow": POS_NUM,
                "background_rotation": NONNEG_NUM,
            },
            what="a mapping of scene generator knobs (SceneConfig fields)",
        )
    ),
}

# data.augment per augmenter (module docstrings of densekit.data.transforms.image / .flow / .volume)
AUGMENT_2D = {
    "scale": pair(number(ge=0.05), what="[lo, hi] zoom factors >= 0.05 with lo <= hi"),
    "crop": int_list(2, lo=8, axes="[H, W]"),
    "hflip": prob(),
    "vflip": prob(),
    "color_jitter": NONNEG_NUM,
    "gauss_noise": prob(),
}
AUGMENT_FLOW = {
    "crop": int_list(2, lo=8, axes="[H, W]"),
    "scale": pair(number(ge=0.05), what="[lo, hi] zoom factors >= 0.05 with lo <= hi"),
    "scale_prob": prob(),
    "stretch": number(ge=0, le=2),
    "stretch_prob": prob(),
    "hflip": prob(),
    "vflip": prob(),
    "photometric": nullable(
        mapping(
            {
                "brightness": NONNEG_NUM,
                "contrast": NONNEG_NUM,
                "saturation": NONNEG_NUM,
                "hue": number(ge=0, le=0.5),
                "asymmetric_prob": prob(),
            }
        )
    ),
    "erase": prob(),
    "erase_size": pair(integer(1), what="[lo, hi] rectangle sides in pixels (positive ints, lo <= hi)"),
    "erase_count": POS,
    "blur": prob(),
}
AUGMENT_3D = {
    "flip": one_of(prob(), list_of(prob(), 3, what="[pD, pH, pW] probabilities")),
    "scale": number(ge=0, lt=1, what="an intensity factor spread in [0, 1)"),
    "shift": NONNEG_NUM,
    "gauss_noise": NONNEG_NUM,
}

OPTIM = {
    "name": choice("adamw", "sgd"),
    "lr": number(gt=0, what="a number > 0"),
    "weight_decay": NONNEG_NUM,
    "momentum": number(ge=0, lt=1),
    "nesterov": boolean(),
    "betas": list_of(number(ge=0, lt=1), 2, what="[beta1, beta2] in [0, 1)"),
    "scheduler": nullable(choice("cosine", "poly", "none")),
    "warmup_steps": NONNEG,
    "min_lr_ratio": number(ge=0, le=1),
    "power": POS_NUM,
    "no_decay": boolean(),  # norms, biases, 1-d params and embedding tables take no weight decay
    "backbone_lr_mult": POS_NUM,  # the backbone's LR = lr * this
}

TRAINER = {
    "accelerator": string(),
    "devices": one_of(
        integer(-1, what="an int >= -1"),
        int_list(lo=0, min_len=1),
        Rule(
            "auto or a GPU list such as '0,1'",
            lambda v: isinstance(v, str) and re.fullmatch(r"auto|-1|\d+(\s*,\s*\d+)*,?", v),
        ),
    ),
    "num_nodes": POS,
    "strategy": one_of(string(), mapping()),
    "precision": choice(*PRECISIONS),
    "max_epochs": nullable(integer(-1, what="an int >= -1")),
    "min_epochs": nullable(NONNEG),
    "max_steps": integer(-1, what="an int >= -1 (-1: no limit)"),
    "min_steps": nullable(NONNEG),
    "log_every_n_steps": POS,
    "val_check_interval": nullable(
        one_of(
            integer(1, what="an int > 0 (training batches)"),
            Rule("a float in (0, 1] (fraction of an epoch)", lambda v: isinstance(v, float) and 0 < v <= 1),
        )
    ),
    "check_val_every_n_epoch": nullable(POS),
    "gradient_clip_val": nullable(NONNEG_NUM),
    "gradient_clip_algorithm": nullable(choice("norm", "value")),
    "accumulate_grad_batches": POS,
    "num_sanity_val_steps": integer(-1, what="an int >= -1"),
    "limit_train_batches": nullable(one_of(NONNEG, number(ge=0, le=1))),
    "limit_val_batches": nullable(one_of(NONNEG, number(ge=0, le=1))),
    "deterministic": nullable(one_of(boolean(), choice("warn"))),
    "benchmark": nullable(boolean()),
    "enable_progress_bar": boolean(),
    "enable_model_summary": boolean(),
    "enable_checkpointing": boolean(),
    "sync_batchnorm": boolean(),
    "use_distributed_sampler": boolean(),
    "detect_anomaly": boolean(),
    "inference_mode": boolean(),
    "fast_dev_run": one_of(boolean(), NONNEG),
}

LOGGER = {"name": choice("csv", "tensorboard", "wandb", "none"), "project": string(), "run_name": nullable(string())}

# Facts of the built-in tasks (densekit.tasks) that this torch-free check needs for their data keys (a test keeps
# them equal to the classes'). Any task name passes here: train's check_config refuses one that is not registered,
# with the registered list, once the task classes are imported; a new task's data is checked as 2D until it is
# listed here.
TASK_DIMS = {"seg": 2, "depth": 2, "flow": 2, "volume": 3}
TASK_AUGMENT = {"seg": AUGMENT_2D, "depth": AUGMENT_2D, "flow": AUGMENT_FLOW, "volume": AUGMENT_3D}

TASK = {
    "name": string("a task name"),
    "targets": list_of(choice("mask", "depth", "flow"), min_len=1, what="a list of mask/depth/flow"),
    "monitor": string(),
    "sweep_direction": choice("maximize", "minimize"),
    "loss": mapping(
        {
            "ce_weight": NONNEG_NUM,
            "dice_weight": NONNEG_NUM,
            "label_smoothing": number(ge=0, lt=1),
            "class_weights": nullable(list_of(NONNEG_NUM, min_len=1, what="a list of weights >= 0, one per class")),
            "include_background": boolean(),
            "silog_weight": NONNEG_NUM,
            "silog_lambda": number(ge=0, le=1),
            "silog_scale": POS_NUM,
            "grad_weight": NONNEG_NUM,
            "grad_scales": POS,
            "kind": choice("l1", "epe", "robust"),
            "max_flow": POS_NUM,
        }
    ),
    "model": mapping({"activation": choice("sigmoid", "softplus"), "max_depth": POS_NUM, "min_depth": NONNEG_NUM}),
    "metrics": mapping(
        {
            "min_depth": NONNEG_NUM,
            "max_depth": POS_NUM,
            "crop": nullable(choice("eigen_nyu", "garg", "eigen_kitti")),
            "median_scaling": boolean(),
            "hd95": boolean(),
        }
    ),
    "inference": mapping({"roi": nullable(int_list(3, axes="[D, H, W]")), "overlap": number(ge=0, lt=1)}),
}


def cross_checks(config: dict) -> list[tuple[str, Any, str]]:
    """(key, value, what is wrong) for the run-level rules that relate several keys."""
    out = []
    data = config.get("data") or {}
    lo, hi = data.get("min_depth"), data.get("max_depth")
    if is_num(lo) and is_num(hi) and not lo < hi:
        out.append(("data.min_depth", lo, f"a value below data.max_depth={format_value(hi)}"))
    return out
