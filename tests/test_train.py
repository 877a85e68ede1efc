import subprocess
import sys

import pytest
import torch
from PIL import Image

from densekit.train import train
from helpers import ROOT


@pytest.mark.slow
def test_few_step_seg_run(smoke_run):
    tmp_path, metrics, out = smoke_run
    assert "Final validation metrics" in out and "val/mIoU" in out and "val/IoU/triangle" in out
    assert "Best checkpoint:" in out
    assert 0.0 <= metrics["val/mIoU"] <= 1.0 and 0.0 <= metrics["val/pixel_acc"] <= 1.0
    best = list((tmp_path / "checkpoints").glob("best-*.ckpt"))
    assert len(best) == 1 and (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert (tmp_path / "config.yaml").is_file()
    assert (tmp_path / "csv" / "metrics.csv").is_file()
    # one validation picture (image | ground truth | prediction) per validation round, 4 samples stacked
    pictures = sorted((tmp_path / "val_examples").glob("step*.png"))
    assert pictures and Image.open(pictures[-1]).size == (3 * 64, 4 * 64)
    ckpt = torch.load(best[0], map_location="cpu", weights_only=False)
    assert ckpt["hyper_parameters"]["config"]["backbone"]["name"] == "mci0"
    assert any(k.startswith("model.head.") for k in ckpt["state_dict"])


@pytest.mark.slow
def test_wandb_logger_offline_writes_under_run_dir(compose, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    run_dir = tmp_path / "run"
    cfg = compose(["experiment=smoke", "logger=wandb", f"output_dir={run_dir}", "data.train_length=4"])
    train(cfg)
    assert list((run_dir / "wandb").glob("offline-run-*")), "wandb should write an offline run in the run dir"
    assert not (tmp_path / "wandb").exists()


@pytest.mark.slow
def test_cli_writes_into_hydra_run_dir(tmp_path):
    before = set(p.name for p in ROOT.iterdir())
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "train.py"),
            "experiment=smoke",
            "data.train_length=4",
            "trainer.enable_progress_bar=false",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = list((tmp_path / "outputs" / "seg").glob("*/*"))
    assert len(runs) == 1 and list((runs[0] / "checkpoints").glob("best-*.ckpt"))
    assert "Best checkpoint:" in proc.stdout
    assert set(p.name for p in ROOT.iterdir()) == before  # nothing written into the source tree


def test_bad_pretrained_path_is_one_line_error(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "train.py"),
            "experiment=smoke",
            "backbone.pretrained=/nonexistent/w.pt",
            f"output_dir={tmp_path}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert "backbone.pretrained: weight file not found: /nonexistent/w.pt" in proc.stderr
