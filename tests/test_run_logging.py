"""Run records: TensorBoard logger, git commit, config tree, model summary; a bf16-mixed run end to end."""

import logging
import subprocess
import sys

import pytest
import yaml

from densekit.runinfo import config_tree, git_info, run_name
from helpers import ROOT, train_run


@pytest.fixture(scope="module")
def tb_run(tmp_path_factory):
    """One tiny seg run with logger=tensorboard under bf16-mixed (CPU autocast), model summary captured."""
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    summary_log = logging.getLogger("pytorch_lightning.callbacks.model_summary")
    summary_log.addHandler(handler)
    summary_log.setLevel(logging.INFO)
    try:
        run = train_run(
            tmp_path_factory,
            "tb_run",
            [
                "experiment=smoke",
                "backbone=mobilenetv3_large",
                "backbone.pretrained=false",
                "logger=tensorboard",
                "trainer.precision=bf16-mixed",
                "data.size=[32,32]",
                "data.train_length=4",
                "data.val_length=4",
                "trainer.enable_progress_bar=false",
            ],
        )
    finally:
        summary_log.removeHandler(handler)
    return (*run, "\n".join(r.getMessage() for r in records))


@pytest.mark.slow
def test_tensorboard_events_and_hparams(tb_run):
    run_dir, metrics, out, _ = tb_run
    tb_dir = run_dir / "tensorboard" / "seg-mobilenetv3_large-lraspp"
    events = list(tb_dir.glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    hparams = yaml.safe_load((tb_dir / "hparams.yaml").read_text())
    assert hparams["config"]["backbone"]["name"] == "mobilenetv3_large"
    assert hparams["git"]["commit"] == git_info()["commit"]
    # bf16-mixed on CPU trained and validated: finite headline metric
    assert 0.0 <= metrics["val/mIoU"] <= 1.0


@pytest.mark.slow
def test_git_commit_config_tree_and_model_summary(tb_run):
    run_dir, _, out, summary = tb_run
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    expected = head.stdout.strip() if head.returncode == 0 else "unknown"
    lines = dict(line.split(": ", 1) for line in (run_dir / "git.txt").read_text().splitlines())
    assert lines["commit"] == expected and lines["dirty"] in ("true", "false", "unknown")
    assert f"config  [git {expected[:12]}" in out
    assert "── backbone" in out and "name: mobilenetv3_large" in out
    assert "── logger: name=tensorboard" in out  # a short section of scalars stays on one line
    assert "── optim\n" in out and "lr: 0.002" in out and "no_decay: true" in out  # a long one is a branch
    assert "precision: bf16-mixed" in out
    # Lightning's ModelSummary at depth 2: the model's parts with their parameter counts
    assert "model.backbone" in summary and "model.head" in summary and "Total params" in summary


def test_git_info_outside_a_checkout(tmp_path):
    assert git_info(tmp_path) == {"commit": "unknown", "dirty": None, "source": str(tmp_path)}


def test_config_tree_plain_fallback(monkeypatch):
    config = {
        "task": {"name": "seg", "loss": {"ce_weight": 1.0}},
        "data": {"size": [64, 64], "flag": True},
        "seed": 0,
        "ckpt_path": None,
    }
    rich_text = config_tree(config, title="cfg")
    assert rich_text.splitlines() == [
        "cfg",
        "├── task",
        "│   ├── name: seg",
        "│   └── loss: ce_weight=1.0",
        "├── data: size=[64, 64], flag=true",
        "├── seed: 0",
        "└── ckpt_path: null",
    ]
    monkeypatch.setitem(sys.modules, "rich.tree", None)  # as if rich were not installed
    assert config_tree(config, title="cfg").splitlines() == [
        "cfg",
        "  task",
        "    name: seg",
        "    loss: ce_weight=1.0",
        "  data: size=[64, 64], flag=true",
        "  seed: 0",
        "  ckpt_path: null",
    ]


def test_run_name():
    assert run_name("seg", "mci0", "lraspp") == "seg-mci0-lraspp"
    assert run_name("seg", "mci0", "lraspp", "my-run") == "my-run"
