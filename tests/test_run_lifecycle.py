"""A run's life in its directory: rerun into a used directory (refuse / resume=auto / overwrite=true), an honest
summary (which checkpoint the metrics come from), the progress bar under max_steps, weights-only best
checkpoints, nothing written outside output_dir, and the checks before working (writable, free disk, a full disk
during a save)."""

import contextlib
import csv
import errno
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

import densekit
import densekit.runs as runs
import densekit.train as dk_train
from densekit.checkpointing import (
    AtomicCheckpointIO,
    BestCheckpoint,
    CheckpointWriteError,
    LastCheckpoint,
    is_weights_only,
    strip_to_weights,
)
from densekit.resume import check_resume_checkpoint
from densekit.runs import RunDirInUse, batches_this_epoch, dir_size, expected_checkpoint_bytes, free_space_warning
from helpers import CONF, ROOT

# 8 samples / batch 2 = 4 steps per epoch on 32x32 scenes; mobilenetv3_large + LR-ASPP (3.2 M parameters: a
# 13 MB weights-only best, a 39 MB last.ckpt with AdamW state) is the cheapest model
TINY = [
    "experiment=smoke",
    "backbone=mobilenetv3_large",
    "backbone.pretrained=false",
    "data.size=[32,32]",
    "data.train_length=8",
    "data.val_length=4",
    "data.batch_size=2",
    "trainer.enable_progress_bar=false",
    "logger=csv",
]
ENV = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", WANDB_MODE="offline")


def compose(overrides):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose(config_name="train", overrides=list(overrides))


def run(run_dir: Path, *extra: str, trial: bool = False):
    """Train TINY into ``run_dir`` (through run_trial when ``trial``); (metrics, printed output)."""
    from densekit.sweeps import run_trial

    cfg = compose([*TINY, *extra, f"output_dir={run_dir}"])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        metrics = run_trial(cfg) if trial else dk_train.train(cfg)
    return metrics, out.getvalue()


def csv_rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "csv" / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory):
    """A finished 1-epoch run (4 steps, validated at its end): its best and last are the same state."""
    run_dir = tmp_path_factory.mktemp("one_epoch") / "run"
    metrics, out = run(run_dir)
    return run_dir, metrics, out


def copy_run(src: Path, dst: Path) -> Path:
    """A copy of a run directory that keeps its hard links (a best checkpoint linked to last.ckpt)."""
    first: dict[int, str] = {}

    def copy(a, b):
        ino = os.stat(a).st_ino
        if ino in first:
            os.link(first[ino], b)
        else:
            first[ino] = b
            shutil.copy2(a, b)

    shutil.copytree(src, dst, copy_function=copy)
    return dst


# -- checkpoint size ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_best_equals_last_is_one_file_and_the_summary_names_both(one_epoch):
    run_dir, metrics, out = one_epoch
    ckpts = run_dir / "checkpoints"
    best = sorted(ckpts.glob("best-*.ckpt"))
    assert [p.name for p in best] == ["best-epoch00-step4.ckpt"]
    last = ckpts / "last.ckpt"
    assert os.path.samefile(best[0], last)  # one file on disk under both names
    state = torch.load(last, map_location="cpu", weights_only=False)
    assert state["global_step"] == 4 and state["optimizer_states"]  # last.ckpt: the full training state
    size = dir_size(run_dir)
    assert size < 1.1 * last.stat().st_size  # counted once: ~39 MB, not ~78 MB
    assert "Final validation metrics (best checkpoint):" in out
    assert f"Best checkpoint: {best[0]}" in out
    assert f"Run directory:   {run_dir} ({runs.format_bytes(size)})" in out


def test_weights_only_best_serves_inference_and_init_but_not_resume(one_epoch, tmp_path):
    run_dir, _, _ = one_epoch
    full = next((run_dir / "checkpoints").glob("best-*.ckpt"))
    best = tmp_path / full.name
    shutil.copy(full, best)
    strip_to_weights(best)
    ckpt = torch.load(best, map_location="cpu", weights_only=False)
    assert is_weights_only(ckpt) and "optimizer_states" not in ckpt and "densekit_rng" not in ckpt
    assert ckpt["hyper_parameters"]["config"]["backbone"]["name"] == "mobilenetv3_large"
    assert best.stat().st_size < 0.4 * full.stat().st_size  # weights only: a third of weights + 2 AdamW moments
    # what evaluate.py / export.py / the notebook use, and init_from
    predictor = densekit.Predictor.from_checkpoint(best)
    assert predictor is not None
    module = dk_train.task_from_config(compose(TINY))
    dk_train.init_weights(module, best)
    reference = torch.load(full, map_location="cpu", weights_only=False)["state_dict"]
    assert torch.equal(module.state_dict()["model.head.cbr.0.weight"], reference["model.head.cbr.0.weight"])
    with pytest.raises(
        ValueError,
        match=r"holds model weights and config only .* cannot resume from it: "
        r"resume from the run's last.ckpt .* init_from=",
    ):
        check_resume_checkpoint(best, ckpt["hyper_parameters"]["config"])


class _Scored(pl.LightningModule):
    """A linear model whose validation score is set from outside (the best epoch is chosen by the test)."""

    def __init__(self, scores):
        super().__init__()
        self.layer = torch.nn.Linear(64, 64)
        self.scores = list(scores)

    def training_step(self, batch, batch_idx):
        return self.layer(batch).square().mean()

    def validation_step(self, batch, batch_idx):
        self.log("val/score", float(self.scores[self.current_epoch]))

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-3)


def test_best_is_linked_while_it_equals_last_then_rewritten_weights_only(tmp_path):
    data = torch.utils.data.DataLoader(torch.randn(4, 64), batch_size=2)
    last = LastCheckpoint(tmp_path / "last.ckpt")
    best = BestCheckpoint(
        dirpath=str(tmp_path), filename="best-{epoch}", monitor="val/score", mode="max", save_top_k=1, last=last
    )
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[best, last],
        plugins=[AtomicCheckpointIO()],
        default_root_dir=str(tmp_path),
    )
    trainer.fit(_Scored([0.9, 0.1]), data, data)  # epoch 0 is the best; last.ckpt moves on to epoch 1
    path = Path(best.best_model_path)
    assert path.name == "best-epoch=0.ckpt" and best.validations == 2
    assert not os.path.samefile(path, last.path)
    saved_best, saved_last = (torch.load(p, map_location="cpu", weights_only=False) for p in (path, last.path))
    assert is_weights_only(saved_best) and saved_best["global_step"] == 2
    assert saved_last["global_step"] == 4 and saved_last["optimizer_states"]
    # last.ckpt was written after the best-checkpoint bookkeeping: a resume knows the best and its score
    state = next(v for k, v in saved_last["callbacks"].items() if k.startswith("BestCheckpoint"))
    assert state["best_model_path"] == str(path) and float(state["best_model_score"]) == pytest.approx(0.9)

    linked = tmp_path / "linked"
    last2 = LastCheckpoint(linked / "last.ckpt")
    best2 = BestCheckpoint(
        dirpath=str(linked), filename="best-{epoch}", monitor="val/score", mode="max", save_top_k=1, last=last2
    )
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[best2, last2],
        plugins=[AtomicCheckpointIO()],
        default_root_dir=str(linked),
    )
    trainer.fit(_Scored([0.1, 0.9]), data, data)  # the last epoch is the best: one file
    assert Path(best2.best_model_path).name == "best-epoch=1.ckpt"
    assert os.path.samefile(best2.best_model_path, last2.path)
    assert sorted(p.name for p in linked.iterdir()) == ["best-epoch=1.ckpt", "last.ckpt"]  # epoch 0's is gone


# -- rerun into a used directory ---------------------------------------------------------------------------
def test_rerun_without_resume_is_refused_before_anything_is_built(one_epoch, tmp_path, monkeypatch):
    run_dir = copy_run(one_epoch[0], tmp_path / "run")
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}

    def no_build(cfg):
        raise AssertionError("data was built")

    monkeypatch.setattr(dk_train, "datamodule_from_config", no_build)
    with pytest.raises(RunDirInUse) as err:
        run(run_dir)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(
        f"output_dir {run_dir} already holds a run (best-epoch00-step4.ckpt, last.ckpt "
        f"(step 4)): resume it with ckpt_path=last (or resume=auto), choose a new "
        f"output_dir=..., or pass overwrite=true"
    )
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()} == before  # nothing touched


@pytest.mark.slow
def test_resume_auto_trains_on_appends_metrics_and_keeps_one_best(one_epoch, tmp_path):
    run_dir = copy_run(one_epoch[0], tmp_path / "run")
    first_rows = csv_rows(run_dir)
    _, out = run(run_dir, "resume=auto", "trainer.max_epochs=2")
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 8
    rows = csv_rows(run_dir)
    assert rows[: len(first_rows)] == first_rows and len(rows) > len(first_rows)  # appended, nothing lost
    assert max(int(r["step"]) for r in rows) >= 7
    best = sorted((run_dir / "checkpoints").glob("best-*.ckpt"))
    assert len(best) == 1  # the resumed run knew the first part's best: no stale second one
    assert (
        f"Best checkpoint: {best[0]}" in out
        and "Best checkpoint: " + str(run_dir / "checkpoints" / "last.ckpt") not in out
    )
    if not os.path.samefile(best[0], run_dir / "checkpoints" / "last.ckpt"):  # an earlier best: weights only
        assert is_weights_only(torch.load(best[0], map_location="cpu", weights_only=False))


@pytest.mark.slow
def test_overwrite_moves_the_previous_run_aside(one_epoch, tmp_path):
    run_dir = copy_run(one_epoch[0], tmp_path / "run")
    old_last = (run_dir / "checkpoints" / "last.ckpt").read_bytes()
    _, out = run(run_dir, "overwrite=true", "trainer.max_steps=1")
    previous = list(run_dir.glob("previous-*"))
    assert len(previous) == 1
    assert (previous[0] / "checkpoints" / "last.ckpt").read_bytes() == old_last  # nothing deleted
    assert (previous[0] / "csv" / "metrics.csv").is_file() and (previous[0] / "config.yaml").is_file()
    assert (
        f"Moved the previous run (overwrite=true) (checkpoints, csv, val_examples, config.yaml, git.txt) to "
        f"{previous[0]}" in out
    )
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 1


# -- an honest summary, the progress bar, records of this run only -------------------------------------------
@pytest.mark.slow
def test_no_validation_summary_progress_bar_warnings_and_fresh_records(tmp_path, monkeypatch, capfd):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "error.txt").write_text("Traceback: an earlier failed attempt\n")
    (run_dir / "result.json").write_text(json.dumps({"status": "failed"}))
    task_from_config = dk_train.task_from_config

    def with_a_warning(*args, **kwargs):
        module = task_from_config(*args, **kwargs)
        module.run_warnings.append("a task warning")
        return module

    monkeypatch.setattr(dk_train, "task_from_config", with_a_warning)
    monkeypatch.setattr(runs.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 10**6, 10**6))
    # 2 of the epoch's 4 steps: the epoch is cut short, its end-of-epoch validation never runs
    _, out = run(run_dir, "trainer.max_steps=2", "trainer.enable_progress_bar=true", trial=True)
    bars = out + capfd.readouterr().err  # Lightning's tqdm bars write to stdout
    assert "Final validation metrics (last.ckpt: no validation ran during training, so there is no best):" in out
    assert "Best checkpoint:" not in out and not list((run_dir / "checkpoints").glob("best-*"))
    assert "Epoch 0: 100%" in bars and "| 2/2 [" in bars and "/4 [" not in bars  # the bar counts to max_steps
    assert "Warnings:\n" in out and "  - a task warning" in out
    assert "  - only 1.0 MB free on the disk of" in out  # the free-disk check, before training
    record = json.loads((run_dir / "result.json").read_text())
    assert record["status"] == "ok" and record["best_checkpoint"] is None
    assert record["last_checkpoint"] == str(run_dir / "checkpoints" / "last.ckpt")
    assert record["metrics_from"].startswith("last.ckpt: no validation ran")
    assert "a task warning" in record["warnings"] and isinstance(record["notes"], list)
    assert record["size_bytes"] == pytest.approx(dir_size(run_dir), rel=0.01)
    # the earlier attempt's records are kept aside, not left to describe this run
    assert not (run_dir / "error.txt").exists()
    previous = list(run_dir.glob("previous-*"))
    assert len(previous) == 1 and "earlier failed attempt" in (previous[0] / "error.txt").read_text()


def test_progress_total_follows_max_steps():
    assert batches_this_epoch(1000, 0, 3, 0) == 3  # max_steps=3 in a 1000-batch epoch
    assert batches_this_epoch(4, 2, 10, 2) == 4  # resumed mid-epoch, the epoch ends first
    assert batches_this_epoch(4, 0, -1, 0) == 4 and batches_this_epoch(1000, 0, 3, 0, accumulate=2) == 6
    assert batches_this_epoch(float("inf"), 0, -1, 0) == float("inf")


# -- nothing outside output_dir ---------------------------------------------------------------------------
@pytest.mark.slow
def test_cli_with_output_dir_writes_nothing_elsewhere(tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *TINY, f"output_dir={run_dir}", "trainer.max_steps=1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env=ENV,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no outputs/<task>/<date>/<time>/
    assert (run_dir / "train.log").is_file() and (run_dir / ".hydra" / "config.yaml").is_file()
    assert json.loads((run_dir / "result.json").read_text())["status"] == "ok"


# -- checks before working --------------------------------------------------------------------------------
def test_unwritable_output_dir_is_one_line_before_anything_is_built(tmp_path, monkeypatch):
    monkeypatch.setattr(dk_train, "datamodule_from_config", lambda cfg: pytest.fail("data was built"))
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(
        OSError,
        match=rf"^output_dir {blocker}/run is not writable \(.*\): choose another "
        rf"output_dir=\.\.\. or fix its permissions$",
    ):
        dk_train.train(compose([*TINY, f"output_dir={blocker / 'run'}"]))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a chmod 0o500 directory anyway")
def test_read_only_output_dir_is_a_permission_error_naming_it(tmp_path, monkeypatch):
    monkeypatch.setattr(dk_train, "datamodule_from_config", lambda cfg: pytest.fail("data was built"))
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match=rf"^output_dir {locked} is not writable \(Permission denied\)"):
            dk_train.train(compose([*TINY, f"output_dir={locked}"]))
    finally:
        locked.chmod(0o700)


def test_free_space_estimate_and_warning(tmp_path, monkeypatch):
    # 3.2 M parameters with AdamW: last.ckpt 4 B x 3, written beside the old one, plus a weights-only best
    assert expected_checkpoint_bytes(1_000_000) == 4_000_000 * (3 + 3 + 1)
    assert free_space_warning(tmp_path, 1) is None
    monkeypatch.setattr(runs.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 10**6, 10**6))
    assert free_space_warning(tmp_path, 28 * 10**6) == (
        f"only 1.0 MB free on the disk of {tmp_path}, but this run's checkpoints need about 28.0 MB: a checkpoint "
        f"save may fail (the previous checkpoint is kept if it does)"
    )


@pytest.mark.slow
def test_disk_full_during_a_checkpoint_save_keeps_the_previous_one(tmp_path, monkeypatch):
    real_save = torch.save
    saves = []

    def full_on_the_third_last_ckpt(obj, f, *args, **kwargs):
        if ".last.ckpt.tmp-" in getattr(f, "name", ""):
            saves.append(obj["global_step"])
            if len(saves) == 3:
                f.write(b"half a checkpoint")
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_on_the_third_last_ckpt)
    run_dir = tmp_path / "run"
    with pytest.raises(CheckpointWriteError) as err:
        run(run_dir, "checkpoint.every_n_train_steps=1")
    monkeypatch.undo()
    message = str(err.value)
    assert message == (
        f"could not write checkpoint {run_dir}/checkpoints/last.ckpt: No space left on device; the "
        f"previous file is intact (disk full: free space there, then resume with ckpt_path=last)"
    )
    assert err.value.errno == errno.ENOSPC and isinstance(err.value, OSError)
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert saves == [1, 2, 3] and last["global_step"] == 2 and last["optimizer_states"]
    assert not list((run_dir / "checkpoints").glob(".*tmp-*"))
