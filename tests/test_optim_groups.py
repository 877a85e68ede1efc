"""The optimiser's parameter groups: weight decay on weight matrices and kernels only (norms, biases, 1-d
params and embedding tables in a no-decay group), ``optim.backbone_lr_mult`` on ``model.backbone.*``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import densekit
from densekit.tasks import DenseTask, SegTask, param_groups


@pytest.fixture(scope="module")
def seg_model():
    torch.manual_seed(0)
    return densekit.create_model(
        "seg", backbone={"name": "mobilenetv3_large", "pretrained": False}, head="lraspp", num_classes=3
    )


def _task(model, **optim) -> SegTask:
    return SegTask(model, num_classes=3, optim={"scheduler": "none", **optim})


def _by_name(module: nn.Module) -> dict[str, nn.Module]:
    """parameter name -> the module that owns it"""
    owners = {}
    for mod_name, mod in module.named_modules():
        for p_name, _ in mod.named_parameters(recurse=False):
            owners[f"{mod_name}.{p_name}" if mod_name else p_name] = mod
    return owners


def test_groups_of_a_real_model(seg_model):
    task = _task(seg_model, lr=2e-3, weight_decay=0.05, backbone_lr_mult=0.1)
    groups = {g["name"]: g for g in param_groups(task, task.optim_cfg, 2e-3, 0.05)}
    assert list(groups) == ["decay", "no_decay", "backbone_decay", "backbone_no_decay"]
    assert [(g["lr"], g["weight_decay"]) for g in groups.values()] == [
        (2e-3, 0.05),
        (2e-3, 0.0),
        (pytest.approx(2e-4), 0.05),
        (pytest.approx(2e-4), 0.0),
    ]
    # every parameter exactly once
    names = [n for g in groups.values() for n in g["names"]]
    assert sorted(names) == sorted(n for n, _ in task.named_parameters()) and len(names) == len(set(names))
    owners = _by_name(task)
    for group in groups.values():
        backbone = group["name"].startswith("backbone_")
        for name, p in zip(group["names"], group["params"], strict=True):
            assert name.startswith("model.backbone.") == backbone, name
            is_norm = isinstance(owners[name], nn.BatchNorm2d)
            decays = group["weight_decay"] > 0
            # decay: conv kernels only (4-d); no decay: every bias and every BatchNorm parameter
            assert decays == (not is_norm and p.ndim > 1), (name, group["name"])
    # the LR-ASPP head of this model: 4 kernels decay; its BatchNorm scale/shift and 2 classifier biases do not
    assert groups["decay"]["names"] == [
        "model.head.cbr.0.weight",
        "model.head.scale.1.weight",
        "model.head.low_classifier.weight",
        "model.head.high_classifier.weight",
    ]
    assert groups["no_decay"]["names"] == [
        "model.head.cbr.1.weight",
        "model.head.cbr.1.bias",
        "model.head.low_classifier.bias",
        "model.head.high_classifier.bias",
    ]
    assert (len(groups["backbone_decay"]["params"]), len(groups["backbone_no_decay"]["params"])) == (62, 108)


def test_configure_optimizers_applies_decay_per_group(seg_model):
    """One AdamW step with zero gradients moves each parameter by decay alone: p <- p * (1 - lr * wd)."""
    task = _task(seg_model, name="adamw", lr=0.1, weight_decay=0.5, backbone_lr_mult=0.2)
    opt = task.configure_optimizers()
    assert isinstance(opt, torch.optim.AdamW)
    assert [(g["lr"], g["weight_decay"]) for g in opt.param_groups] == [
        (0.1, 0.5),
        (0.1, 0.0),
        (pytest.approx(0.02), 0.5),
        (pytest.approx(0.02), 0.0),
    ]
    assert "names" not in opt.param_groups[0]  # parameter names stay out of the optimiser state
    before = {n: p.detach().clone() for n, p in task.named_parameters()}
    for p in task.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    factor = {"decay": 1 - 0.1 * 0.5, "no_decay": 1.0, "backbone_decay": 1 - 0.02 * 0.5, "backbone_no_decay": 1.0}
    for group in param_groups(task, task.optim_cfg, 0.1, 0.5):
        for name in group["names"]:
            now = dict(task.named_parameters())[name]
            torch.testing.assert_close(now, before[name] * factor[group["name"]], rtol=1e-6, atol=1e-7)
    with torch.no_grad():  # the module-scoped model is shared: put the weights back
        for n, p in task.named_parameters():
            p.copy_(before[n])
            p.grad = None


def test_no_decay_off_and_sgd(seg_model):
    task = _task(seg_model, name="sgd", lr=0.01, weight_decay=1e-4, no_decay=False)
    opt = task.configure_optimizers()
    assert isinstance(opt, torch.optim.SGD) and len(opt.param_groups) == 1
    assert (opt.param_groups[0]["lr"], opt.param_groups[0]["weight_decay"]) == (0.01, 1e-4)
    assert len(opt.param_groups[0]["params"]) == sum(1 for _ in task.parameters())
    mult = _task(seg_model, name="sgd", lr=0.01, weight_decay=1e-4, no_decay=False, backbone_lr_mult=0.5)
    assert [(g["name"], g["lr"]) for g in mult.configure_optimizers().param_groups] == [
        ("decay", 0.01),
        ("backbone_decay", 0.005),
    ]
    with pytest.raises(ValueError, match=r"optim.backbone_lr_mult=0.0: expected a positive multiplier"):
        _task(seg_model, backbone_lr_mult=0.0).configure_optimizers()


class _Tokens(nn.Module):
    """A transformer-style toy: position table, class token, embedding, LayerNorm, a linear layer."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Module()
        self.backbone.pos_embed = nn.Parameter(torch.zeros(1, 16, 8))  # 3-d, but a table
        self.backbone.cls_token = nn.Parameter(torch.zeros(1, 1, 8))
        self.backbone.tokens = nn.Embedding(10, 8)
        self.backbone.norm = nn.LayerNorm(8)
        self.backbone.frozen = nn.Linear(8, 8)
        self.backbone.frozen.requires_grad_(False)
        self.head = nn.Linear(8, 2)
        self.scale = nn.Parameter(torch.ones(2))  # 1-d: no decay


def test_tables_norms_and_frozen_parameters():
    task = DenseTask(_Tokens(), optim={"lr": 1.0, "weight_decay": 0.1, "backbone_lr_mult": 0.5})
    groups = {
        g["name"]: (g["lr"], g["weight_decay"], sorted(g["names"]))
        for g in param_groups(task, task.optim_cfg, 1.0, 0.1)
    }
    assert groups == {
        "decay": (1.0, 0.1, ["model.head.weight"]),
        "no_decay": (1.0, 0.0, ["model.head.bias", "model.scale"]),
        "backbone_no_decay": (
            0.5,
            0.0,
            [
                "model.backbone.cls_token",
                "model.backbone.norm.bias",
                "model.backbone.norm.weight",
                "model.backbone.pos_embed",
                "model.backbone.tokens.weight",
            ],
        ),
    }  # the frozen layer is in no group; no backbone parameter decays here


def test_resuming_a_state_with_other_groups_says_what_to_do(seg_model):
    task = _task(seg_model)
    assert [g["name"] for g in task.configure_optimizers().param_groups] == ["decay", "no_decay"]  # mult 1: 2
    one_group = {"optimizer_states": [{"param_groups": [{"lr": 1e-3, "params": list(range(10))}], "state": {}}]}
    with pytest.raises(
        ValueError,
        match=r"has 1 parameter group\(s\) but this run makes 2 "
        r"\(optim.no_decay=True\): resume with the optim settings it was "
        r"trained with \(optim.no_decay=false\)",
    ):
        task.on_load_checkpoint(one_group)
    _task(seg_model, no_decay=False).on_load_checkpoint(one_group)  # the old layout: accepted
    task.on_load_checkpoint({"state_dict": {}})  # weights only (init_from, evaluation): nothing to check
