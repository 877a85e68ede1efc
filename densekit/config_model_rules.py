"""The config keys of each backbone and head, by registered name, and the rules that relate them.

``BACKBONES[name]`` / ``HEADS[name]``: the keys of that component's YAML (conf/backbone/, conf/head/) beyond
the common ones (``BACKBONE_COMMON``; a head's ``name``), keyed by the name it is registered under in
``densekit.models.BACKBONES`` / ``HEADS`` (a test checks that every registered one has a table, so a new
component cannot go unchecked). ``cross_checks`` holds what one key cannot say: list lengths that must agree
between a backbone and its head, even channel counts for reversible couplings, a pooling spec's shape.

Adding a backbone or head: its table here, even an empty one (``"name": {}``: only the common keys).
"""

from __future__ import annotations

from typing import Any

from .config_types import (
    NONNEG,
    POS,
    POS_NUM,
    boolean,
    choice,
    format_value,
    int_list,
    is_int,
    list_of,
    mapping,
    nullable,
    number,
    one_of,
    string,
)

__all__ = ["BACKBONES", "BACKBONE_COMMON", "HEADS", "cross_checks"]

CHANNELS = int_list(min_len=1)  # channel counts, deepest first or per level
NORM = choice("group", "instance", "batch")
ACT = choice("relu6", "silu", "leaky_relu")
POOL = one_of(choice("global"), mapping(what="{kernel: [kh, kw], stride: [sh, sw]}"))
HEADS = {  # ffnet_a/b/c in conf/head/ are YAML variants of the one registered ffnet
    "lraspp": {"inter_channels": POS, "low_reduction": POS, "pool": POOL},
    "unet": {"decoder_channels": CHANNELS, "attention_type": nullable(choice("scse")), "interpolation_mode": string()},
    "fpn": {
        "pyramid_channels": POS,
        "segmentation_channels": POS,
        "dropout": number(ge=0, lt=1),
        "merge_policy": choice("add", "cat"),
        "interpolation_mode": string(),
    },
    "deeplabv3plus": {
        "decoder_channels": POS,
        "atrous_rates": nullable(int_list(3)),
        "aspp_separable": boolean(),
        "aspp_dropout": number(ge=0, lt=1),
        "low_reduction": POS,
    },
    "ffnet": {
        "base_channels": int_list(4),
        "up_channels": int_list(4),
        "seg_channels": POS,
        "seg_kernel": POS,
        "upsample_mode": choice("nearest", "bilinear"),
    },
    "flow": {
        "levels": nullable(int_list(min_len=1)),
        "output_stride": POS,
        "search_radius": POS,
        "estimator_channels": CHANNELS,
        "fine_estimator_channels": nullable(CHANNELS),
        "context_channels": int_list(),
        "context_dilations": int_list(),
        "feature_channels": nullable(POS),
        "upfeat_channels": NONNEG,
        "flow_scale": POS_NUM,
        "upsample": choice("bilinear", "convex"),
    },
    "lightm": {"num_groups": POS},
    "revunet3d": {
        "decoder_depths": int_list(lo=0),
        "expand_ratio": POS,
        "kernel": POS,
        "norm": NORM,
        "act": ACT,
        "num_groups": POS,
        "reversible": boolean(),
    },
}

BACKBONE_COMMON = {
    "name": string(),
    "freeze": one_of(boolean(), choice("bn_only")),
    "in_channels": POS,
    "tag": string(),
    "drop_path_rate": number(ge=0, lt=1),
}
MCI = {"out_indices": int_list(lo=0, min_len=1)}
LIGHTM = {"init_filters": POS, "blocks_down": int_list(min_len=1), "d_state": POS, "d_conv": POS, "expand": POS}
PER_LEVEL = int_list(min_len=1)
BACKBONES = {
    "mci0": MCI,
    "mci1": MCI,
    "mci2": MCI,
    "mobilenetv3_large": {"dilated": boolean(), "reduced_tail": boolean(), "taps": choice("first", "last")},
    "mobilesam": {
        "levels": list_of(
            choice("stage0", "stage1", "stage2", "stage3", "neck"), min_len=1, what="a list of stage0..stage3 / neck"
        )
    },
    "lightm": LIGHTM,
    "lightm3d": LIGHTM,
    "flow_pyramid": {
        "widths": PER_LEVEL,
        "blocks": one_of(POS, PER_LEVEL),
        "expand": one_of(POS, PER_LEVEL),
        "se": one_of(boolean(), list_of(boolean(), what="a list of true/false", min_len=1)),
    },
    "revmb3d": {
        "widths": int_list(min_len=2),
        "depths": int_list(min_len=2),
        "expand_ratio": POS,
        "kernel": POS,
        "norm": NORM,
        "act": ACT,
        "num_groups": POS,
        "reversible": boolean(),
    },
}


def cross_checks(config: dict) -> list[tuple[str, Any, str]]:
    """(key, value, what is wrong) for the backbone and head rules that relate several keys."""
    out = []
    bb, head = config.get("backbone") or {}, config.get("head") or {}
    if bb.get("name") == "revmb3d":
        widths, depths = bb.get("widths"), bb.get("depths")
        if isinstance(widths, list) and all(is_int(w) for w in widths):
            odd = [w for w in widths if w % 2]
            decoder = head.get("decoder_depths") if head.get("name") == "revunet3d" else None
            if odd:
                why = f"even channel counts (a reversible coupling splits the channels in halves); {odd} are odd"
                out.append(("backbone.widths", widths, why))
            elif isinstance(depths, list) and len(depths) != len(widths):
                why = f"one entry per level of backbone.widths ({len(widths)} levels), got {len(depths)}"
                out.append(("backbone.depths", depths, why))
            elif isinstance(decoder, list) and len(decoder) != len(widths) - 1:
                why = (
                    f"{len(widths) - 1} entries (levels - 1 of backbone.widths={format_value(widths)}), "
                    f"got {len(decoder)}"
                )
                out.append(("head.decoder_depths", decoder, why))
    if bb.get("name") == "flow_pyramid" and isinstance(bb.get("widths"), list):
        n = len(bb["widths"])
        for key in ("blocks", "expand", "se"):
            value = bb.get(key)
            if isinstance(value, list) and len(value) != n:
                why = f"one value per level ({n} levels, as backbone.widths), got {len(value)}"
                out.append((f"backbone.{key}", value, why))
    if head.get("name") == "flow":
        ch, dil = head.get("context_channels"), head.get("context_dilations")
        if isinstance(ch, list) and isinstance(dil, list) and ch and len(ch) != len(dil):
            why = f"one dilation per context channel count ({len(ch)}), got {len(dil)}"
            out.append(("head.context_dilations", dil, why))
    pool = head.get("pool") if head.get("name") == "lraspp" else None
    if isinstance(pool, dict):
        two = int_list(2)
        if set(pool) != {"kernel", "stride"} or two.check(pool.get("kernel")) or two.check(pool.get("stride")):
            out.append(("head.pool", pool, "global or {kernel: [kh, kw], stride: [sh, sw]} (positive ints)"))
    return out
