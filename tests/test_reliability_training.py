"""The reliability catalogue (docs/reliability.md), training and faults: a non-finite loss, a full disk, a
kill or Ctrl-C mid-run each end in one clear error or a correct recovery, never a half-written checkpoint."""

import errno
import os
import signal
import subprocess
import sys
import time
import warnings

import pytest
import torch
from torch import nn

import densekit.train as dk_train
from densekit.checkpointing import (
    AtomicCheckpointIO,
    FiniteWeights,
    LastCheckpoint,
    TrainingInterrupted,
    remove_stale_temp_files,
)
from densekit.resume import check_resume_checkpoint, resolve_ckpt_path
from helpers import quiet_trainer

# one intra-op thread: many tiny ops; on a shared CPU a second thread mostly waits for a busy core
pytestmark = pytest.mark.usefixtures("single_thread")


# == training =========================================================================================
def _tiny_task(nonfinite="raise"):
    from densekit.tasks.seg import SegTask

    torch.manual_seed(0)
    return SegTask(
        nn.Conv2d(3, 2, 1),
        num_classes=2,
        optim={"name": "sgd", "lr": 0.1, "scheduler": "none"},
        config={"nonfinite": nonfinite},
    )


def _batches(n=4, nan_at=(), size=8):
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        image = torch.rand(3, size, size, generator=g)
        if i in nan_at:
            image[0, 0, 0] = float("nan")  # -> NaN logits -> NaN loss
        out.append({"image": image, "mask": (image[1] > 0.5).long()})
    return out


def _trainer(tmp_path, **kw):
    return quiet_trainer(tmp_path, **{"max_epochs": 1, "plugins": [AtomicCheckpointIO()], **kw})


def _loader(batches, batch_size=1):
    return torch.utils.data.DataLoader(batches, batch_size=batch_size, shuffle=False)


def test_training_nonfinite_loss_raises_naming_the_step_and_writes_no_bad_checkpoint(tmp_path):
    task = _tiny_task("raise")
    last = LastCheckpoint(tmp_path / "last.ckpt", every_n_train_steps=1)
    trainer = _trainer(tmp_path, callbacks=[last, FiniteWeights()])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(FloatingPointError, match=r"non-finite training loss \(nan\) at step 2; stopping"):
            trainer.fit(task, _loader(_batches(nan_at=(2,))))
    saved = torch.load(tmp_path / "last.ckpt", weights_only=False)
    assert saved["global_step"] == 2  # the last good step, nothing after it
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values() if v.is_floating_point())
    # a finite loss whose update overflowed: the save is refused before a byte is written
    with torch.no_grad():
        task.model.weight[0, 0] = float("inf")
    with pytest.raises(FloatingPointError, match=r"non-finite weights after step 2 .*model\.weight"):
        trainer.save_checkpoint(str(tmp_path / "bad.ckpt"))
    assert not (tmp_path / "bad.ckpt").exists() and not list(tmp_path.glob(".*tmp-*"))


def test_training_nonfinite_loss_skip_drops_the_step_and_counts_it(tmp_path, compose):
    batches = _batches(n=4, nan_at=(1, 3))
    task = _tiny_task("skip")
    trainer = _trainer(tmp_path)
    with pytest.warns(RuntimeWarning, match=r"non-finite training loss \(nan\) at step 1: step skipped"):
        trainer.fit(task, _loader(batches))
    assert task.skipped_nonfinite == 2
    assert float(trainer.callback_metrics["train/skipped_nonfinite"]) == 2.0
    # the skipped steps changed nothing: the same weights as training on the two good batches alone
    ref = _tiny_task("raise")
    _trainer(tmp_path / "ref").fit(ref, _loader([batches[0], batches[2]]))
    for (name, a), b in zip(task.model.state_dict().items(), ref.model.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
    # wired through the config: nonfinite=skip reaches the task
    module = dk_train.task_from_config(compose(["experiment=smoke", "nonfinite=skip"]))
    assert module.nonfinite == "skip"
    assert dk_train.task_from_config(compose(["experiment=smoke"])).nonfinite == "raise"


def test_training_disk_full_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.arange(4.0)}, "global_step": 3}, path)
    real_save = torch.save

    def half_then_enospc(obj, f, *args, **kwargs):
        real_save({"partial": torch.zeros(100)}, f)  # some bytes reach the disk ...
        raise OSError(errno.ENOSPC, "No space left on device")  # ... then it is full

    monkeypatch.setattr(torch, "save", half_then_enospc)
    with pytest.raises(OSError, match="No space left on device"):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(8)}, "global_step": 4}, path)
    monkeypatch.undo()
    saved = torch.load(path, weights_only=True)
    assert saved["global_step"] == 3 and torch.equal(saved["state_dict"]["w"], torch.arange(4.0))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


# == faults ==========================================================================================
_KILLED_SAVE = r"""
import os, signal, sys, torch
from densekit.checkpointing import AtomicCheckpointIO
path = sys.argv[1]
AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(3)}, "global_step": 7,
    "hyper_parameters": {"config": {"task": {"name": "seg"}, "backbone": {"name": "mci0"},
                                    "head": {"name": "lraspp"}}}}, path)
real = torch.save
def dying(obj, f, *a, **k):
    f.write(b"half a checkpoint")
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)  # killed mid-save
torch.save = dying
AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "global_step": 8}, path)
"""


def test_fault_sigkill_mid_save_then_ckpt_path_last_resumes_from_the_intact_checkpoint(tmp_path):
    """Fast version of tests/test_resume.py::test_sigkill_mid_epoch_then_resume_equals_uninterrupted_run."""
    ckpt_dir = tmp_path / "checkpoints"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED_SAVE, str(ckpt_dir / "last.ckpt")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert len(list(ckpt_dir.glob(".last.ckpt.tmp-*"))) == 1  # the half-written file is only the temp file
    assert len(remove_stale_temp_files(ckpt_dir)) == 1
    path = resolve_ckpt_path("last", tmp_path)
    assert path == ckpt_dir / "last.ckpt"
    config = {"task": {"name": "seg"}, "backbone": {"name": "mci0"}, "head": {"name": "lraspp"}}
    check_resume_checkpoint(path, config)
    saved = torch.load(path, weights_only=True)
    assert saved["global_step"] == 7 and torch.equal(saved["state_dict"]["w"], torch.ones(3))


def test_fault_resume_from_last_gives_the_same_final_weights(tmp_path):
    batches = _loader(_batches(n=3), batch_size=1)
    straight = _tiny_task()
    _trainer(tmp_path / "a", max_epochs=2).fit(straight, batches)
    first = _tiny_task()
    last = LastCheckpoint(tmp_path / "b" / "last.ckpt")
    _trainer(tmp_path / "b", max_epochs=1, callbacks=[last]).fit(first, batches)
    resumed = _tiny_task()
    torch.manual_seed(123)  # another init: everything must come from the checkpoint
    resumed.model.reset_parameters()
    _trainer(tmp_path / "b", max_epochs=2, callbacks=[LastCheckpoint(last.path)]).fit(
        resumed, batches, ckpt_path=str(last.path)
    )
    assert torch.load(last.path, weights_only=False)["global_step"] == 6
    for a, b in zip(straight.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)


def test_fault_sigint_stops_cleanly_with_a_usable_last_checkpoint(tmp_path):
    """Fast version of tests/test_resume.py::test_ctrl_c_stops_cleanly_with_a_resumable_last_checkpoint."""
    import pytorch_lightning as pl

    class CtrlC(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == 1:
                os.kill(os.getpid(), signal.SIGINT)  # handled by LastCheckpoint: finish this step, then stop

    # the handler before the run is Python's default, whatever an earlier test in this process left behind
    signal.signal(signal.SIGINT, signal.default_int_handler)
    task = _tiny_task()
    last = LastCheckpoint(tmp_path / "last.ckpt")
    with pytest.raises(TrainingInterrupted, match=r"interrupted at step 2; last checkpoint: .*last\.ckpt"):
        _trainer(tmp_path, callbacks=[last, CtrlC()]).fit(task, _loader(_batches(n=4)))
    with pytest.raises(KeyboardInterrupt):  # after the run, the first Ctrl-C interrupts at once again
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1.0)  # the handler runs between bytecodes; never reached
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    saved = torch.load(last.path, weights_only=False)
    assert saved["global_step"] == 2
    for name, value in task.model.state_dict().items():
        assert torch.equal(saved["state_dict"][f"model.{name}"], value)
    resumed = _tiny_task()
    _trainer(tmp_path, callbacks=[LastCheckpoint(last.path)]).fit(
        resumed, _loader(_batches(n=4)), ckpt_path=str(last.path)
    )
    assert torch.load(last.path, weights_only=False)["global_step"] == 4
