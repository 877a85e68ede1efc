"""The optimiser and LR schedule of every task, from the run config's ``optim`` section (plain dict).

Parameter groups (nanoGPT / timm habit): weight decay applies to weight matrices and convolution kernels
only; norms, biases, every other 1-d parameter (scales, layer-scale gammas) and position / embedding
tables are in a no-decay group (``optim.no_decay``, on by default). ``optim.backbone_lr_mult`` scales
the learning rate of ``model.backbone.*`` parameters (e.g. 0.1 to fine-tune a pretrained trunk gently).
"""

from __future__ import annotations

import math

import torch
from torch import nn

# parameter names (any dotted component) that are tables, not weights to shrink towards zero
_TABLE_WORDS = (
    "pos_embed",
    "position_embedding",
    "pos_embedding",
    "relative_position_bias_table",
    "cls_token",
    "mask_token",
    "embedding",
    "embeddings",
    "absolute_pos_embed",
)
_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def _no_decay_names(module: nn.Module) -> set[str]:
    """Full names of the parameters that take no weight decay: 1-d parameters (biases, norm scales, ...),
    every parameter of a normalisation or embedding layer, and position / token tables."""
    out = set()
    for mod_name, mod in module.named_modules():
        owned = isinstance(mod, (*_NORMS, nn.Embedding)) or type(mod).__name__.lower().endswith("norm")
        for p_name, p in mod.named_parameters(recurse=False):
            full = f"{mod_name}.{p_name}" if mod_name else p_name
            words = full.split(".")
            if owned or p.ndim <= 1 or any(w in _TABLE_WORDS for w in words):
                out.add(full)
    return out


def param_groups(module: nn.Module, cfg: dict, lr: float, weight_decay: float) -> list[dict]:
    """The optimiser's parameter groups for ``module`` (the task: its network is ``module.model``).

    Up to four groups, each ``{"params", "lr", "weight_decay", "name"}``: ``decay`` / ``no_decay`` for the
    rest of the network and ``backbone_decay`` / ``backbone_no_decay`` at ``lr * backbone_lr_mult`` for
    ``model.backbone.*`` (only when the multiplier is not 1). Empty groups are left out; frozen parameters
    are not optimised.
    """
    mult = float(cfg.get("backbone_lr_mult", 1.0))
    if not mult > 0:
        raise ValueError(f"optim.backbone_lr_mult={mult}: expected a positive multiplier")
    no_decay = _no_decay_names(module) if cfg.get("no_decay", True) else set()
    groups: dict[str, dict] = {}
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        backbone = mult != 1.0 and name.startswith("model.backbone.")  # at lr: one group with the rest
        decays = name not in no_decay
        key = ("backbone_" if backbone else "") + ("decay" if decays else "no_decay")
        group = groups.setdefault(
            key,
            {
                "params": [],
                "names": [],
                "lr": lr * (mult if backbone else 1.0),
                "weight_decay": weight_decay if decays else 0.0,
                "name": key,
            },
        )
        group["params"].append(p)
        group["names"].append(name)
    order = ("decay", "no_decay", "backbone_decay", "backbone_no_decay")
    return [groups[k] for k in order if k in groups]


def build_optimizer(module: nn.Module, cfg: dict) -> torch.optim.Optimizer:
    """AdamW or SGD over ``param_groups`` (``cfg``: the run config's ``optim`` section)."""
    name = cfg.get("name", "adamw")
    if name == "adamw":
        lr, wd = cfg.get("lr", 1e-3), cfg.get("weight_decay", 0.01)
        groups = _strip_names(param_groups(module, cfg, lr, wd))
        return torch.optim.AdamW(groups, lr=lr, weight_decay=wd, betas=tuple(cfg.get("betas", (0.9, 0.999))))
    if name == "sgd":
        lr, wd = cfg.get("lr", 0.01), cfg.get("weight_decay", 1e-4)
        groups = _strip_names(param_groups(module, cfg, lr, wd))
        return torch.optim.SGD(
            groups, lr=lr, momentum=cfg.get("momentum", 0.9), weight_decay=wd, nesterov=cfg.get("nesterov", False)
        )
    raise ValueError(f"unknown optimizer {name!r}; expected 'adamw' or 'sgd'")


def _strip_names(groups: list[dict]) -> list[dict]:
    # torch keeps unknown group keys; the parameter names would only bloat the optimiser state in checkpoints
    return [{k: v for k, v in g.items() if k != "names"} for g in groups]


def make_schedule(kind: str, total_steps: int, warmup_steps: int = 0, min_ratio: float = 0.0, power: float = 0.9):
    """Per-step LR multiplier: linear warm-up, then cosine or poly decay to ``min_ratio``."""
    if kind not in ("cosine", "poly"):
        raise ValueError(f"unknown scheduler {kind!r}; expected 'cosine', 'poly' or 'none'")
    warmup_steps = min(int(warmup_steps), total_steps - 1) if total_steps > 1 else 0

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        t = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        decay = 0.5 * (1 + math.cos(math.pi * t)) if kind == "cosine" else (1 - t) ** power
        return min_ratio + (1 - min_ratio) * decay

    return factor
