"""Distributed training (2 CPU processes, DDP over gloo), launcher configs, the submitit local launcher."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import ROOT

ENV = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", WANDB_MODE="offline")
# 9 validation samples: not divisible by 2 processes (a padding sampler would count one twice)
DDP_RUN = [
    "experiment=smoke",
    "backbone=mobilenetv3_large",
    "backbone.pretrained=false",
    "data.train_length=16",
    "data.val_length=9",
    "data.batch_size=4",
    "trainer.enable_progress_bar=false",
    "logger=csv",
]


def last_logged_validation(run_dir: Path) -> dict[str, float]:
    """The last row of the CSV log that holds validation metrics (full precision)."""
    with open(run_dir / "csv" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val/mIoU")]
    return {k: float(v) for k, v in rows[-1].items() if k.startswith("val/") and v != ""}


@pytest.mark.slow
def test_two_process_ddp_validation_equals_one_process_validation(compose, tmp_path):
    import pytorch_lightning as pl

    from densekit.builder import datamodule_from_config, task_from_config

    run = tmp_path / "ddp"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *DDP_RUN, "trainer=ddp_cpu", f"output_dir={run}"],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "distributed_backend=gloo" in proc.stdout + proc.stderr
    best = list((run / "checkpoints").glob("best-*.ckpt"))
    # 16 samples / (batch 4 x 2 processes) = 2 optimiser steps in the epoch
    assert len(best) == 1 and torch.load(best[0], map_location="cpu", weights_only=False)["global_step"] == 2
    ddp_metrics = last_logged_validation(run)

    # the same checkpoint validated by one process over the whole split
    cfg = compose([*DDP_RUN, f"output_dir={tmp_path / 'single'}"])
    datamodule = datamodule_from_config(cfg)
    datamodule.setup("fit")
    module = task_from_config(cfg, list(datamodule.val_set.class_names))
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        use_distributed_sampler=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path / "single"),
    )  # validation pictures go there
    single = trainer.validate(module, datamodule=datamodule, ckpt_path=str(best[0]), verbose=False)[0]
    assert set(ddp_metrics) == set(single) and "val/mIoU" in single and "val/loss" in single
    for key, value in single.items():
        assert abs(ddp_metrics[key] - float(value)) <= 1e-6, (key, ddp_metrics[key], float(value))


def test_distributed_trainer_configs_compose(compose):
    ddp = compose(["trainer=ddp", "trainer.sync_batchnorm=true"]).trainer
    assert (ddp.accelerator, ddp.strategy, ddp.devices, ddp.sync_batchnorm) == ("gpu", "ddp", -1, True)
    cpu = compose(["trainer=ddp_cpu"]).trainer
    assert (cpu.accelerator, cpu.strategy, cpu.devices) == ("cpu", "ddp", 2)
    fsdp = compose(["trainer=fsdp"]).trainer
    assert fsdp.strategy._target_ == "pytorch_lightning.strategies.FSDPStrategy"
    assert fsdp.strategy.state_dict_type == "full" and fsdp.max_epochs == 1  # default.yaml's keys inherited
    from hydra.utils import instantiate

    strategy = instantiate(fsdp.strategy)
    assert type(strategy).__name__ == "FSDPStrategy"


def test_slurm_launcher_config_composes(tmp_path):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = hydra_compose(
            config_name="train", overrides=["hydra/launcher=slurm", "hydra.launcher.nodes=2"], return_hydra_config=True
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.nodes, launcher.gpus_per_node, launcher.tasks_per_node) == (2, 8, 8)
    assert launcher.timeout_min == 1440 and "partition" in launcher


@pytest.mark.slow
def test_submitit_local_launcher_runs_a_job(tmp_path):
    run = tmp_path / "job"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "train.py"),
            "-m",
            "hydra/launcher=submitit_local",
            "experiment=smoke",
            "backbone=mobilenetv3_large",
            "backbone.pretrained=false",
            "data.train_length=4",
            "data.val_length=2",
            "trainer.enable_progress_bar=false",
            f"output_dir={run}",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
            "hydra.launcher.timeout_min=5",
        ],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert list((run / "checkpoints").glob("best-*.ckpt")) and (run / "checkpoints" / "last.ckpt").is_file()
    assert last_logged_validation(run)["val/mIoU"] >= 0.0
    # submitit's own job folder: the pickled job and its stdout/stderr
    assert list((tmp_path / "sweep" / ".submitit").rglob("*_log.out"))
