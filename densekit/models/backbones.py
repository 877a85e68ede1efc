"""Backbones: one contract for every encoder.

A backbone is an ``nn.Module`` with ``channels: list[int]``, ``reductions: list[int]`` and
``forward(x) -> list[Tensor]`` (one map per reduction). It takes images in [0, 1] and owns the
normalisation its pretrained weights expect (``mean``/``std`` buffers).

``BACKBONES`` is the backbone registry: each backbone module registers its classes where they are defined
(``@BACKBONES.register(name, dims=..., preset=...)``); ``create_backbone`` builds one by name.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import warnings
from pathlib import Path

import timm
import torch
from torch import nn

from ..registry import Registry

log = logging.getLogger(__name__)

# name -> backbone class, with facts: ``dims`` (2 or 3), ``preset`` (constructor arguments the name stands
# for), optionally ``tasks`` (the tasks it serves; absent = every task of its dims). Each backbone module
# registers its classes where they are defined; ``densekit.models`` imports every module of the package.
BACKBONES = Registry("backbone")

# Presets: name -> timm architecture and default pretrained tag. Other tags (e.g. MobileCLIP2's
# ``apple_mclip2_dfndr2b``) are a YAML override of ``tag``, not a new class.
TIMM_PRESETS = {
    "mci0": {"arch": "fastvit_mci0", "tag": "apple_mclip"},
    "mci1": {"arch": "fastvit_mci1", "tag": "apple_mclip"},
    "mci2": {"arch": "fastvit_mci2", "tag": "apple_mclip"},
}

# Keys of the classification / CLIP-projection path that a dense trunk does not have: dropped (and
# reported) when loading a full checkpoint, never silently accepted for anything else.
_HEAD_PREFIXES = ("head.", "norm_head.", "final_conv.", "head_dist.", "fc.", "classifier.", "conv_head.")
_WRAPPER_PREFIXES = ("module.", "model.", "visual.trunk.", "trunk.")
_warned_tags: set[str] = set()


class Backbone(nn.Module):
    """Base class: holds the normalisation and declares the contract."""

    channels: list[int]
    reductions: list[int]

    def __init__(self, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)):
        super().__init__()
        # Not persistent: they come from the pretrained config, not from training.
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    @property
    def stride(self) -> int:
        return max(self.reductions)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.mean.shape[1]:
            raise ValueError(
                f"{type(self).__name__} expects images (B, {self.mean.shape[1]}, H, W) in [0, 1], "
                f"got shape {tuple(x.shape)}"
            )
        return (x - self.mean) / self.std


class TimmBackbone(Backbone):
    """Any timm model with ``forward_intermediates`` as a multi-scale feature extractor.

    The classification head and ``final_conv`` are pruned (``prune_intermediate_layers``), so the
    state dict holds only the dense trunk under timm's own key names.
    """

    def __init__(
        self,
        arch: str,
        tag: str | None = None,
        pretrained: bool | str = False,
        out_indices: tuple[int, ...] | list[int] = (0, 1, 2, 3),
        drop_path_rate: float = 0.0,
    ):
        name = f"{arch}.{tag}" if tag else arch
        model, weight_file = with_pretrained(
            pretrained,
            f"timm tag {name}",
            lambda hub: timm.create_model(name, pretrained=hub, drop_path_rate=drop_path_rate),
        )
        cfg = model.pretrained_cfg
        super().__init__(mean=cfg.get("mean", (0.0, 0.0, 0.0)), std=cfg.get("std", (1.0, 1.0, 1.0)))
        self.out_indices = [int(i) for i in out_indices]
        model.prune_intermediate_layers(indices=self.out_indices, prune_norm=True, prune_head=True)
        self.model = model
        self.name = name
        info = model.feature_info
        self.channels = [int(info[i]["num_chs"]) for i in self.out_indices]
        self.reductions = [int(info[i]["reduction"]) for i in self.out_indices]
        if weight_file is not None:
            load_trunk_weights(self.model, weight_file, filter_fn=_timm_filter_fn(model), what=name)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.normalize(x)
        return self.model.forward_intermediates(x, indices=self.out_indices, intermediates_only=True)


for _name, _preset in TIMM_PRESETS.items():
    BACKBONES.add(_name, TimmBackbone, dims=2, preset=_preset)


def _reachable(host: str, timeout: float = 3.0) -> bool:
    """A quick TCP check so ``auto`` does not spend a minute in download retries on an offline machine."""
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _hf_host() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("://")[-1].split("/")[0]


def with_pretrained(pretrained, name: str, build, host: str | None = None):
    """Resolve ``backbone.pretrained`` for a model ``build(hub: bool) -> nn.Module``.

    Returns ``(module, weight_file_or_None)``. False: random init. True: the hub weights or an error.
    "auto": the hub weights when they can be had (local cache with HF_HUB_OFFLINE=1, or a reachable
    ``host``), otherwise one warning per ``name`` and random init. A path: random init here, the caller
    loads the file strictly; a path that does not exist is a one-line FileNotFoundError.
    """
    word = str(pretrained).strip().lower() if pretrained is not None else "false"
    if word in ("false", "none", ""):
        return build(False), None
    if word not in ("true", "auto"):
        path = Path(str(pretrained)).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"backbone.pretrained: weight file not found: {path}")
        return build(False), path
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    if word == "auto" and not offline and not _reachable(host or _hf_host()):
        reason = "the hub cannot be reached"
    else:
        try:  # with HF_HUB_OFFLINE=1 only the local cache is consulted, which is fast
            return build(True), None
        except Exception as err:  # noqa: BLE001 - any hub failure: error for true, warning for auto
            reason = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
            if word == "true":
                raise RuntimeError(
                    f"backbone.pretrained=true: could not get pretrained weights for '{name}' ({reason}). "
                    f"Pass a local file with backbone.pretrained=/path/to/weights, or use pretrained=auto to "
                    f"continue from random init."
                ) from err
    if name not in _warned_tags:
        _warned_tags.add(name)
        warnings.warn(
            f"backbone.pretrained=auto: could not get pretrained weights for '{name}' ({reason}). "
            f"Continuing from RANDOM initialisation. To use the weights offline, download them once and pass "
            f"backbone.pretrained=/path/to/weights (.pt/.pth/.bin/.safetensors), or set "
            f"backbone.pretrained=false to silence this warning.",
            UserWarning,
            stacklevel=3,
        )
    return build(False), None


def _timm_filter_fn(model: nn.Module):
    """The architecture's own key remapper (e.g. original MobileCLIP -> timm names), if timm has one."""
    return getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a weight file (.safetensors, or a torch pickle possibly wrapped in 'state_dict'/'model')."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weight file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"could not read weight file {path}: {type(err).__name__}: {err}") from err
    for wrapper in ("state_dict", "model", "module"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ValueError(f"weight file {path} does not hold a state dict of tensors (got {type(state).__name__})")
    return state


def load_trunk_weights(model: nn.Module, path: str | os.PathLike, filter_fn=None, what: str | None = None) -> None:
    """Load ``path`` into ``model`` strictly. Wrapper prefixes are stripped, ``filter_fn`` remaps foreign
    key names, classification-head keys are dropped (and logged); any other mismatch is an error that
    lists the keys."""
    state = read_state_dict(path)
    own = model.state_dict()
    state = _strip_prefixes(state, own)
    if filter_fn is not None and not (set(state) & set(own)):
        state = filter_fn(state, model)
        state = _strip_prefixes(state, own)
    dropped = [k for k in state if k not in own and k.startswith(_HEAD_PREFIXES)]
    state = {k: v for k, v in state.items() if k not in dropped}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shape = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or shape:
        parts = [f"weight file {path} does not match {what or type(model).__name__}"]
        if missing:
            parts.append(f"missing keys ({len(missing)}): {few(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {few(unexpected)}")
        if shape:
            parts.append(
                "shape mismatches: "
                + few([f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in shape])
            )
        raise ValueError("; ".join(parts))
    model.load_state_dict(state, strict=True)
    log.info("loaded %d tensors from %s (dropped %d classification-head tensors)", len(state), path, len(dropped))


def _strip_prefixes(state: dict, own: dict) -> dict:
    """Remove wrapper prefixes (DDP 'module.', our 'model.', OpenCLIP 'visual.trunk.') shared by all keys."""
    changed = True
    while changed and state and not (set(state) & set(own)):
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
                changed = True
        if not changed:
            # OpenCLIP full-model files: keep only the image trunk.
            for prefix in ("module.visual.trunk.", "visual.trunk."):
                sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
                if sub:
                    state, changed = sub, True
                    break
    return state


def few(items: list[str], n: int = 12) -> str:
    shown = ", ".join(items[:n])
    return shown + (f", ... (+{len(items) - n} more)" if len(items) > n else "")


_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)


def apply_freeze(backbone: nn.Module, freeze: bool | str) -> nn.Module:
    """Partial fine-tuning. False: train everything. True: train nothing in the backbone.
    "bn_only": train only the shifts (biases) of the normalisation layers — MobileTL's memory-lean
    transfer (Chiang et al., AAAI 2023), which needs no stored activations for the frozen weights."""
    mode = str(freeze).strip().lower()
    if mode in ("false", "none", "0"):
        return backbone
    if mode not in ("true", "bn_only"):
        raise ValueError(f"backbone.freeze must be false, true or bn_only, got {freeze!r}")
    for p in backbone.parameters():
        p.requires_grad_(False)
    if mode == "bn_only":
        for m in backbone.modules():
            if isinstance(m, _NORMS) and getattr(m, "bias", None) is not None:
                m.bias.requires_grad_(True)
    return backbone


def create_backbone(name: str, *, pretrained: bool | str = False, freeze: bool | str = False, **kwargs) -> Backbone:
    """Backbone ``name`` following the contract (``channels``, ``reductions``, list of features).

    ``pretrained``: False, True (hub weights), "auto" (hub if reachable, else warn once and go on from
    random init), or a local weight file (loaded strictly). ``freeze``: False, True or "bn_only".
    """
    cls = BACKBONES.get_or_fail(name)
    params = {**BACKBONES.fact(name, "preset", {}), **kwargs}
    return apply_freeze(cls(pretrained=pretrained, **params), freeze)
