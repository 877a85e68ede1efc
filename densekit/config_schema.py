"""Typed checks of a composed run config, before any data or model is built.

Hydra-free: ``validate_config(config)`` takes the plain, resolved config dict (``OmegaConf.to_container(cfg,
resolve=True)``) and raises ``ConfigError`` naming the first wrong key, the value given and what is expected:

    data.size=abc: expected a list of 2 positive ints [H, W], got 'abc'

Why a table of rules and not Hydra structured configs: the groups are flat YAML files whose keys differ per
choice (``backbone.expand`` is an int for lightm and a per-level list for flow_pyramid; ``data.augment.scale``
is a zoom range [lo, hi] in 2D and an intensity factor in 3D), several helpers add keys to them, and a
dataclass per choice would duplicate every YAML. The rules below cover the keys of every file in conf/
(plus what the command line commonly sets, e.g. ``trainer.accumulate_grad_batches``); a key without a rule
is not checked here (Hydra's struct mode already refuses a key that exists in no config). A value of ``???``
(a mandatory value not given) is left to the code that needs it, which reports it itself.

Which rules apply depends on the run: ``data.size`` needs 2 ints for 2D tasks and 3 for ``task=volume``;
``data.augment`` follows the augmenter of the task (``densekit.data.transforms`` for seg/depth,
``flow_transforms`` for flow, ``volumes.VolumeAugment`` for volume); ``head`` and ``backbone`` keys follow
their ``name``. Cross-key rules check what one key cannot (list lengths that must agree, lo <= hi, min <
max). ``check_files=True`` also checks that a ``backbone.pretrained`` path exists (a ``FileNotFoundError``):
a typo then fails in a second instead of after the data is listed and the model built.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Callable, Iterable

from .errors import ConfigError

__all__ = ["Rule", "boolean", "choice", "int_list", "integer", "list_of", "mapping", "nullable", "number",
           "one_of", "pair", "prob", "string", "check_value", "config_rules", "validate_config", "format_value"]

MISSING = "???"  # OmegaConf's mandatory-value marker, as to_container(resolve=True) leaves it


# -- formatting ------------------------------------------------------------------------------------------
def format_value(value, limit: int = 60) -> str:
    """A value as one would write it on the command line: [64,64], null, true, abc."""
    if value is None:
        text = "null"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (list, tuple)):
        text = "[" + ",".join(format_value(v, limit) for v in value) + "]"
    elif isinstance(value, dict):
        text = "{" + ", ".join(f"{k}: {format_value(v, limit)}" for k, v in value.items()) + "}"
    else:
        text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _got(value) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, list):
        return f"{format_value(value)} ({len(value)} value{'s' if len(value) != 1 else ''})"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return format_value(value)
    return format_value(value)



# -- rules ----------------------------------------------------------------------------------------------
class Rule:
    """``test(value) -> bool`` with the text a failure prints after "expected"."""

    def __init__(self, expected: str, test: Callable[[Any], bool]):
        self.expected, self.test = expected, test

    def check(self, value) -> str | None:
        """None when ``value`` passes, else what was expected."""
        try:
            ok = bool(self.test(value))
        except (TypeError, ValueError):
            ok = False
        return None if ok else self.expected

    def __repr__(self) -> str:
        return f"Rule({self.expected!r})"


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return (_is_int(v) or isinstance(v, float)) and not (isinstance(v, float) and math.isnan(v))


def _bounds_text(lo, hi, lo_open=False, hi_open=False) -> str:
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo}"
    if hi is not None:
        return f"{'<' if hi_open else '<='} {hi}"
    return ""


def integer(lo: int | None = None, hi: int | None = None, what: str | None = None) -> Rule:
    """An int (not a bool) in [lo, hi]."""
    if what is None:
        what = {1: "a positive int", 0: "an int >= 0"}.get(lo) if hi is None else None
        what = what or f"an int {_bounds_text(lo, hi)}".rstrip()
    return Rule(what, lambda v: _is_int(v) and (lo is None or v >= lo) and (hi is None or v <= hi))


def number(gt=None, ge=None, lt=None, le=None, what: str | None = None) -> Rule:
    """An int or float (not a bool, not NaN) within the given bounds."""
    lo, lo_open = (gt, True) if gt is not None else (ge, False)
    hi, hi_open = (lt, True) if lt is not None else (le, False)
    what = what or f"a number {_bounds_text(lo, hi, lo_open, hi_open)}".rstrip()

    def test(v):
        if not _is_num(v):
            return False
        return ((gt is None or v > gt) and (ge is None or v >= ge) and (lt is None or v < lt)
                and (le is None or v <= le))

    return Rule(what, test)


def prob() -> Rule:
    return number(ge=0, le=1, what="a probability in [0, 1]")


def boolean() -> Rule:
    return Rule("true or false", lambda v: isinstance(v, bool))


def string(what: str = "a string") -> Rule:
    return Rule(what, lambda v: isinstance(v, str) and v != "")


def choice(*values) -> Rule:
    shown = list(dict.fromkeys(format_value(v) for v in values))  # 16 and "16" read alike
    what = shown[0] if len(shown) == 1 else f"one of {', '.join(shown)}"
    return Rule(what, lambda v: any(v == c and type(v) is type(c) for c in values))


def nullable(rule: Rule) -> Rule:
    out = Rule(f"null or {rule.expected}", lambda v: v is None or rule.check(v) is None)
    out.inner = rule  # a nullable mapping's keys are still walked
    return out


def one_of(*rules: Rule) -> Rule:
    return Rule(" or ".join(r.expected for r in rules), lambda v: any(r.check(v) is None for r in rules))


def list_of(item: Rule, n: int | Iterable[int] | None = None, what: str | None = None,
            min_len: int = 0) -> Rule:
    """A list whose items pass ``item``; ``n``: the allowed length(s)."""
    lengths = None if n is None else ({n} if isinstance(n, int) else set(n))
    if what is None:
        count = "" if lengths is None else " or ".join(str(k) for k in sorted(lengths)) + " "
        plural = item.expected.removeprefix("a ").removeprefix("an ")
        plural = plural.replace("int", "ints", 1) if "int" in plural else plural + " values"
        what = f"a list of {count}{plural}"
    return Rule(what, lambda v: isinstance(v, list) and (lengths is None or len(v) in lengths)
                and len(v) >= min_len and all(item.check(x) is None for x in v))


def int_list(n: int | Iterable[int] | None = None, lo: int = 1, axes: str = "", min_len: int = 0) -> Rule:
    """A list of ``n`` ints >= ``lo`` (positive by default), e.g. ``int_list(2, axes="[H, W]")``."""
    kind = {1: "positive ints", 0: "ints >= 0"}.get(lo, f"ints >= {lo}")
    lengths = None if n is None else ({n} if isinstance(n, int) else set(n))
    count = "" if lengths is None else " or ".join(str(k) for k in sorted(lengths)) + " "
    what = f"a list of {count}{kind}" + (f" {axes}" if axes else "")
    return list_of(integer(lo), n, what=what, min_len=min_len)


def pair(item: Rule, ordered: bool = True, what: str | None = None) -> Rule:
    """[lo, hi]: two values passing ``item``, lo <= hi when ``ordered``."""
    what = what or f"[lo, hi]: two of {item.expected.removeprefix('a ').removeprefix('an ')}" + \
        (" with lo <= hi" if ordered else "")
    return Rule(what, lambda v: isinstance(v, list) and len(v) == 2 and all(item.check(x) is None for x in v)
                and (not ordered or v[0] <= v[1]))


def mapping(rules: dict[str, Rule] | None = None, what: str = "a mapping {key: value}") -> Rule:
    """A dict; ``rules`` (relative keys) are checked by ``config_rules``' walk, not here."""
    rule = Rule(what, lambda v: isinstance(v, dict))
    rule.children = rules or {}
    return rule


# -- the tables ---------------------------------------------------------------------------------------------
# Lightning's precision names (lightning_fabric.connector: _PRECISION_INPUT_STR, its aliases and ints).
PRECISIONS = ("transformer-engine", "transformer-engine-float16", "16-true", "16-mixed", "bf16-true",
              "bf16-mixed", "32-true", "64-true", "64", "32", "16", "bf16", 64, 32, 16)

POS = integer(1)
NONNEG = integer(0)
POS_NUM = number(gt=0, what="a number > 0")
NONNEG_NUM = number(ge=0, what="a number >= 0")
PATH = string("a path")
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
    "checkpoint": mapping({"every_n_train_steps": NONNEG, "save_last": boolean(), "best_weights_only": boolean(),
                           "share_best_with_last": boolean()}),
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
    "patch": None,  # set per dims below
    "val_patch": None,
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
}

# data.augment per augmenter (module docstrings of densekit.data.transforms / flow_transforms / volumes)
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
    "photometric": nullable(mapping({
        "brightness": NONNEG_NUM, "contrast": NONNEG_NUM, "saturation": NONNEG_NUM,
        "hue": number(ge=0, le=0.5), "asymmetric_prob": prob(),
    })),
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
}

CHANNELS = int_list(min_len=1)  # channel counts, deepest first or per level
HEADS = {
    "lraspp": {"inter_channels": POS, "low_reduction": POS,
               "pool": one_of(choice("global"), mapping(what="{kernel: [kh, kw], stride: [sh, sw]}"))},
    "unet": {"decoder_channels": CHANNELS, "attention_type": nullable(choice("scse")),
             "interpolation_mode": string()},
    "fpn": {"pyramid_channels": POS, "segmentation_channels": POS, "dropout": number(ge=0, lt=1),
            "merge_policy": choice("add", "cat"), "interpolation_mode": string()},
    "deeplabv3plus": {"decoder_channels": POS, "atrous_rates": nullable(int_list(3)),
                      "aspp_separable": boolean(), "aspp_dropout": number(ge=0, lt=1), "low_reduction": POS},
    "ffnet": {"base_channels": int_list(4), "up_channels": int_list(4), "seg_channels": POS, "seg_kernel": POS,
              "upsample_mode": choice("nearest", "bilinear")},
    "flow": {"levels": nullable(int_list(min_len=1)), "output_stride": POS, "search_radius": POS,
             "estimator_channels": CHANNELS, "fine_estimator_channels": nullable(CHANNELS),
             "context_channels": int_list(), "context_dilations": int_list(), "feature_channels": nullable(POS),
             "upfeat_channels": NONNEG, "flow_scale": POS_NUM, "upsample": choice("bilinear", "convex")},
    "lightm": {"num_groups": POS},
    "revunet3d": {"decoder_depths": int_list(lo=0), "expand_ratio": POS, "kernel": POS,
                  "norm": choice("group", "instance", "batch"), "act": choice("relu6", "silu", "leaky_relu"),
                  "num_groups": POS, "reversible": boolean()},
}

FREEZE = one_of(boolean(), choice("bn_only"))
BACKBONE_COMMON = {"name": string(), "freeze": FREEZE, "in_channels": POS, "tag": string(),
                   "drop_path_rate": number(ge=0, lt=1)}
BACKBONES = {
    "mci": {"out_indices": int_list(lo=0, min_len=1)},
    "mobilenetv3_large": {"dilated": boolean(), "reduced_tail": boolean(), "taps": choice("first", "last")},
    "mobilesam": {"levels": list_of(choice("stage0", "stage1", "stage2", "stage3", "neck"), min_len=1,
                                    what="a list of stage0..stage3 / neck")},
    "lightm": {"init_filters": POS, "blocks_down": int_list(min_len=1), "d_state": POS, "d_conv": POS,
               "expand": POS},
    "flow_pyramid": {"widths": int_list(min_len=1),
                     "blocks": one_of(POS, int_list(min_len=1)),
                     "expand": one_of(POS, int_list(min_len=1)),
                     "se": one_of(boolean(), list_of(boolean(), what="a list of true/false", min_len=1))},
    "revmb3d": {"widths": int_list(min_len=2), "depths": int_list(min_len=2), "expand_ratio": POS, "kernel": POS,
                "norm": choice("group", "instance", "batch"), "act": choice("relu6", "silu", "leaky_relu"),
                "num_groups": POS, "reversible": boolean()},
}
BACKBONES["lightm3d"] = BACKBONES["lightm"]
for _name in ("mci0", "mci1", "mci2"):
    BACKBONES[_name] = BACKBONES["mci"]

TRAINER = {
    "accelerator": string(),
    "devices": one_of(integer(-1, what="an int >= -1"), int_list(lo=0, min_len=1),
                      Rule("auto or a GPU list such as '0,1'",
                           lambda v: isinstance(v, str) and re.fullmatch(r"auto|-1|\d+(\s*,\s*\d+)*,?", v))),
    "num_nodes": POS,
    "strategy": one_of(string(), mapping()),
    "precision": choice(*PRECISIONS),
    "max_epochs": nullable(integer(-1, what="an int >= -1")),
    "min_epochs": nullable(NONNEG),
    "max_steps": integer(-1, what="an int >= -1 (-1: no limit)"),
    "min_steps": nullable(NONNEG),
    "log_every_n_steps": POS,
    "val_check_interval": nullable(one_of(
        integer(1, what="an int > 0 (training batches)"),
        Rule("a float in (0, 1] (fraction of an epoch)", lambda v: isinstance(v, float) and 0 < v <= 1),
    )),
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

LOGGER = {"name": choice("csv", "tensorboard", "wandb", "none"), "project": string(),
          "run_name": nullable(string())}

TASK = {
    "name": choice("seg", "depth", "flow", "volume"),
    "targets": list_of(choice("mask", "depth", "flow"), min_len=1, what="a list of mask/depth/flow"),
    "monitor": string(),
    "sweep_direction": choice("maximize", "minimize"),
    "loss": mapping({
        "ce_weight": NONNEG_NUM, "dice_weight": NONNEG_NUM, "label_smoothing": number(ge=0, lt=1),
        "class_weights": nullable(list_of(NONNEG_NUM, min_len=1, what="a list of weights >= 0, one per class")),
        "include_background": boolean(),
        "silog_weight": NONNEG_NUM, "silog_lambda": number(ge=0, le=1), "silog_scale": POS_NUM,
        "grad_weight": NONNEG_NUM, "grad_scales": POS,
        "kind": choice("l1", "epe", "robust"), "max_flow": POS_NUM,
    }),
    "model": mapping({"activation": choice("sigmoid", "softplus"), "max_depth": POS_NUM,
                      "min_depth": NONNEG_NUM}),
    "metrics": mapping({"min_depth": NONNEG_NUM, "max_depth": POS_NUM,
                        "crop": nullable(choice("eigen_nyu", "garg", "eigen_kitti")),
                        "median_scaling": boolean(), "hd95": boolean()}),
    "inference": mapping({"roi": nullable(int_list(3, axes="[D, H, W]")), "overlap": number(ge=0, lt=1)}),
}


def config_rules(config: dict) -> dict[str, Rule]:
    """Every dotted key path -> its rule, for this run's task, head and backbone."""
    task = ((config.get("task") or {}).get("name") if isinstance(config.get("task"), dict) else None)
    dims = 3 if task == "volume" else 2
    data = dict(DATA_COMMON)
    size = int_list(3, axes="[D, H, W]") if dims == 3 else int_list(2, axes="[H, W]")
    data.update(size=size, patch=nullable(int_list(3, axes="[D, H, W]")),
                val_patch=nullable(int_list(3, axes="[D, H, W]")))
    augment = {"flow": AUGMENT_FLOW, "volume": AUGMENT_3D}.get(task, AUGMENT_2D)
    data["augment"] = nullable(mapping(augment))
    head_name = (config.get("head") or {}).get("name") if isinstance(config.get("head"), dict) else None
    bb_name = (config.get("backbone") or {}).get("name") if isinstance(config.get("backbone"), dict) else None
    backbone = {**BACKBONE_COMMON, **BACKBONES.get(bb_name, {})}
    groups = {"data": data, "optim": OPTIM, "head": {"name": string(), **HEADS.get(head_name, {})},
              "backbone": backbone, "trainer": TRAINER, "logger": LOGGER, "task": TASK}
    rules: dict[str, Rule] = {}

    def add(prefix: str, table: dict) -> None:
        for key, rule in table.items():
            if rule is None:
                continue
            path = f"{prefix}.{key}" if prefix else key
            rules[path] = rule
            inner = getattr(rule, "children", None) or getattr(getattr(rule, "inner", None), "children", None)
            if inner:
                add(path, inner)

    add("", TOP)
    for group, table in groups.items():
        rules[group] = mapping(what=f"a mapping (the {group} config group)")
        add(group, table)
    return rules


# -- cross-key rules ----------------------------------------------------------------------------------------
def select(config: dict | None, path: str, default=None):
    """``config["a"]["b"]`` for ``path="a.b"`` in a plain nested dict; ``default`` where a part is missing."""
    node = config
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def _cross_checks(config: dict) -> list[tuple[str, Any, str]]:
    """(key, value, what is wrong) for rules that relate several keys."""
    out = []
    bb, head, data = config.get("backbone") or {}, config.get("head") or {}, config.get("data") or {}
    lo, hi = data.get("min_depth"), data.get("max_depth")
    if _is_num(lo) and _is_num(hi) and not lo < hi:
        out.append(("data.min_depth", lo, f"a value below data.max_depth={format_value(hi)}"))
    if bb.get("name") == "revmb3d":
        widths, depths = bb.get("widths"), bb.get("depths")
        if isinstance(widths, list) and all(_is_int(w) for w in widths):
            odd = [w for w in widths if w % 2]
            if odd:
                out.append(("backbone.widths", widths, "even channel counts (a reversible coupling splits the "
                                                         f"channels in halves); {odd} are odd"))
            elif isinstance(depths, list) and len(depths) != len(widths):
                out.append(("backbone.depths", depths, f"one entry per level of backbone.widths "
                                                         f"({len(widths)} levels), got {len(depths)}"))
            elif head.get("name") == "revunet3d" and isinstance(head.get("decoder_depths"), list) \
                    and len(head["decoder_depths"]) != len(widths) - 1:
                out.append(("head.decoder_depths", head["decoder_depths"],
                            f"{len(widths) - 1} entries (levels - 1 of backbone.widths={format_value(widths)}), "
                            f"got {len(head['decoder_depths'])}"))
    if bb.get("name") == "flow_pyramid" and isinstance(bb.get("widths"), list):
        n = len(bb["widths"])
        for key in ("blocks", "expand", "se"):
            value = bb.get(key)
            if isinstance(value, list) and len(value) != n:
                out.append((f"backbone.{key}", value, f"one value per level ({n} levels, as backbone.widths), "
                                                       f"got {len(value)}"))
    if head.get("name") == "flow":
        ch, dil = head.get("context_channels"), head.get("context_dilations")
        if isinstance(ch, list) and isinstance(dil, list) and ch and len(ch) != len(dil):
            out.append(("head.context_dilations", dil, f"one dilation per context channel count "
                                                        f"({len(ch)}), got {len(dil)}"))
    pool = head.get("pool") if head.get("name") == "lraspp" else None
    if isinstance(pool, dict):
        two = int_list(2)
        if set(pool) != {"kernel", "stride"} or two.check(pool.get("kernel")) or two.check(pool.get("stride")):
            out.append(("head.pool", pool, "global or {kernel: [kh, kw], stride: [sh, sw]} (positive ints)"))
    return out


def _file_checks(config: dict) -> None:
    bb = config.get("backbone") or {}
    pretrained = bb.get("pretrained")
    if pretrained is None or isinstance(pretrained, bool):
        return
    if not isinstance(pretrained, str):
        raise ConfigError(f"backbone.pretrained={format_value(pretrained)}: expected true, false, auto or the "
                          f"path of a weight file, got {_got(pretrained)}")
    if pretrained.strip().lower() in ("true", "false", "auto", "none", ""):
        return
    path = Path(pretrained).expanduser()
    if not path.is_file():
        what = "a directory, not a weight file" if path.is_dir() else "weight file not found"
        raise FileNotFoundError(f"backbone.pretrained: {what}: {path} (expected true, false, auto or the path "
                                f"of a .pt/.pth/.bin/.safetensors file)")


# -- reporting --------------------------------------------------------------------------------------------
def check_value(key: str, value, rule: Rule) -> str | None:
    """The one-line failure for ``key=value`` under ``rule``, or None."""
    expected = rule.check(value)
    if expected is None:
        return None
    return f"{key}={format_value(value)}: expected {expected}, got {_got(value)}"


def parse_option(key: str, text: str, rule: Rule, raw: bool = False, unparsable: str = "error"):
    """A script option ``key=text`` (evaluate.py, export.py) as ``rule``'s type, or a ConfigError naming it.

    ``null``/``none``/``~`` is None where the rule allows it; ``raw`` keys (paths, devices) are taken as written
    (a directory called 'true' stays one); booleans accept only true/false (YAML would also take yes/on);
    anything else is read as YAML. Text YAML cannot read is an error (``unparsable="error"``) or is checked as
    the plain string (``"text"``)."""
    import yaml

    low = text.strip().lower()
    if low in ("null", "none", "~") and rule.check(None) is None:
        return None
    if raw:
        value = text
    elif rule.expected.endswith("true or false"):
        if low not in ("true", "false"):
            raise ConfigError(f"{key}={text}: expected true or false, got {text!r}")
        value = low == "true"
    else:
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as err:
            if unparsable == "error":
                raise ConfigError(f"{key}={text}: expected {rule.expected}; cannot parse it ({err.problem})") from None
            value = text
    problem = check_value(key, value, rule)
    if problem:
        raise ConfigError(problem)
    return value


def _walk(config: dict, rules: dict[str, Rule]) -> list[str]:
    problems = []
    for path, rule in rules.items():
        parent = path.rpartition(".")[0]
        if parent and not isinstance(select(config, parent), dict):
            continue  # the parent is absent or already reported
        sentinel = object()
        value = select(config, path, sentinel)
        if value is sentinel or value == MISSING:
            continue
        problem = check_value(path, value, rule)
        if problem:
            problems.append(problem)
    return problems


def validate_config(config: dict, groups: Iterable[str] | None = None, check_files: bool = True) -> None:
    """Raise ``ConfigError`` for the first key of ``config`` (a plain, resolved run config) that breaks its
    rule, naming the other wrong keys too; ``groups`` limits the check to those top-level groups (e.g.
    ``("data",)`` for a data config composed by evaluate.py: give ``{"task": ..., "data": ...}``).
    With ``check_files`` a ``backbone.pretrained`` path must exist (``FileNotFoundError``)."""
    if not isinstance(config, dict):
        raise ConfigError(f"the config must be a mapping, got {type(config).__name__}")
    rules = config_rules(config)
    if groups is not None:
        keep = tuple(groups)
        rules = {k: r for k, r in rules.items() if k.split(".")[0] in keep}
    problems = _walk(config, rules)
    for key, value, what in _cross_checks(config):
        if groups is None or key.split(".")[0] in tuple(groups):
            problems.append(f"{key}={format_value(value)}: expected {what}")
    if problems:
        more = ""
        if len(problems) > 1:
            others = [p.split("=", 1)[0] for p in problems[1:]]
            more = f" (also wrong: {', '.join(others)})"
        raise ConfigError(problems[0] + more)
    if check_files and (groups is None or "backbone" in tuple(groups)):
        _file_checks(config)
