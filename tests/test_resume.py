"""Resume after SIGKILL / Ctrl-C, atomic checkpoints, resume-time checks (sample order and seeding, which a
resume relies on: test_sample_order.py)."""

import errno
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from densekit.checkpointing import AtomicCheckpointIO, FiniteWeights, remove_stale_temp_files
from densekit.resume import check_resume_checkpoint
from helpers import ROOT

# 24 samples / batch 4 = 6 steps per epoch, 2 epochs; last.ckpt after every step. mobilenetv3_large + LR-ASPP
# (3.2 M parameters, a 39 MB checkpoint with AdamW state) is the cheapest model to save every step.
RUN = [
    "experiment=smoke",
    "backbone=mobilenetv3_large",
    "backbone.pretrained=false",
    "data.train_length=24",
    "data.val_length=8",
    "data.batch_size=4",
    "trainer.max_epochs=2",
    "checkpoint.every_n_train_steps=1",
    "trainer.deterministic=true",
    "trainer.enable_progress_bar=false",
    "logger=none",
]
STEPS_PER_EPOCH = 6
ENV = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", WANDB_MODE="offline", PYTHONUNBUFFERED="1")


def start(run_dir: Path, *extra: str) -> subprocess.Popen:
    log = open(run_dir.parent / f"{run_dir.name}.log", "a")
    return subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *RUN, f"output_dir={run_dir}", *extra],
        cwd=run_dir.parent,
        env=ENV,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def read_log(run_dir: Path) -> str:
    return (run_dir.parent / f"{run_dir.name}.log").read_text()


def final_metrics(log: str) -> dict[str, float]:
    """The 'Final validation metrics' table printed by train() (the last one in the log)."""
    table = log.rsplit("Final validation metrics", 1)[-1]
    return {m[1]: float(m[2]) for m in re.finditer(r"^(val/\S+)\s+(\S+)$", table, re.M)}


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def wait_for_step(proc: subprocess.Popen, last: Path, accept, timeout: float = 120.0) -> int:
    """Freeze ``proc`` (SIGSTOP) whenever last.ckpt exists and read its step: return it (process still
    frozen) once ``accept(step)``; otherwise let it run on."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (rc={proc.returncode}) before an acceptable checkpoint")
        if last.exists():
            os.kill(proc.pid, signal.SIGSTOP)
            step = torch.load(last, map_location="cpu", weights_only=False, mmap=True)["global_step"]
            if accept(step):
                return step
            os.kill(proc.pid, signal.SIGCONT)
        time.sleep(0.05)
    raise AssertionError("no acceptable checkpoint in time")


def assert_same_state(a: dict, b: dict) -> None:
    assert a["global_step"] == b["global_step"] and a["epoch"] == b["epoch"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), f"{k}: {(v.double() - b['state_dict'][k].double()).abs().max()}"
    assert ("optimizer_states" in a) == ("optimizer_states" in b)  # both full, or both weights-only bests
    if "optimizer_states" not in a:
        return
    for sa, sb in zip(a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert [s["last_epoch"] for s in a["lr_schedulers"]] == [s["last_epoch"] for s in b["lr_schedulers"]]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_equals_uninterrupted_run(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    a = start(straight)
    b = start(killed)
    try:
        # kill inside the second epoch, not at its boundary: the resume must skip the finished batches
        step = wait_for_step(
            b, killed / "checkpoints" / "last.ckpt", lambda s: s > STEPS_PER_EPOCH + 1 and s % STEPS_PER_EPOCH
        )
        os.kill(b.pid, signal.SIGKILL)
        b.wait()
    finally:
        if b.poll() is None:
            b.kill()
    assert a.wait(timeout=300) == 0, read_log(straight)[-3000:]
    assert b.returncode == -signal.SIGKILL
    resumed = start(killed, "ckpt_path=last")
    assert resumed.wait(timeout=300) == 0, read_log(killed)[-3000:]

    restored = killed / "checkpoints" / "last.ckpt"
    assert f"Restoring states from the checkpoint path at {restored}" in read_log(killed)
    assert STEPS_PER_EPOCH < step < 2 * STEPS_PER_EPOCH
    last_a, last_b = load(straight / "checkpoints" / "last.ckpt"), load(killed / "checkpoints" / "last.ckpt")
    assert last_a["global_step"] == 2 * STEPS_PER_EPOCH
    assert_same_state(last_a, last_b)  # bit-identical weights, optimiser moments and schedule
    best_a = sorted(p.name for p in (straight / "checkpoints").glob("best-*.ckpt"))
    best_b = sorted(p.name for p in (killed / "checkpoints").glob("best-*.ckpt"))
    assert best_a == best_b and len(best_a) == 1
    assert_same_state(load(straight / "checkpoints" / best_a[0]), load(killed / "checkpoints" / best_b[0]))
    metrics_a, metrics_b = final_metrics(read_log(straight)), final_metrics(read_log(killed))
    assert "val/mIoU" in metrics_a and metrics_a == metrics_b
    assert not list((killed / "checkpoints").glob(".*tmp-*"))  # a temp file of the killed save is cleaned up


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_with_a_resumable_last_checkpoint(tmp_path):
    run = tmp_path / "run"
    proc = start(run, "checkpoint.every_n_train_steps=0")  # last.ckpt only from the graceful stop
    try:
        deadline = time.time() + 120
        while "train/loss" not in read_log(run) and not re.search(r"Epoch 0.*\|", read_log(run)):
            # wait until training runs: the Lightning model summary is printed just before the first step
            if "Total estimated model params size" in read_log(run):
                break
            assert proc.poll() is None and time.time() < deadline, read_log(run)[-3000:]
            time.sleep(0.05)
        time.sleep(1.0)
        os.kill(proc.pid, signal.SIGINT)
        rc = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = read_log(run)
    assert rc != 0 and "Final validation metrics" not in log  # the run (and a sweep around it) stops
    match = re.search(r"Interrupted at step (\d+); last checkpoint: (\S+)", log)
    assert match, log[-3000:]
    step, path = int(match[1]), Path(match[2])
    assert path == run / "checkpoints" / "last.ckpt"
    ckpt = load(path)
    assert ckpt["global_step"] == step >= 1 and step < 2 * STEPS_PER_EPOCH
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    # resumable with the command as printed: the run's overrides, its output_dir and ckpt_path=last
    command = re.search(r"^Resume with: (python train.py .*)$", log, re.M)[1]
    words = shlex.split(command)
    assert words[:2] == ["python", "train.py"] and words[-2:] == [f"output_dir={run}", "ckpt_path=last"]
    assert words[2:-2] == [*RUN, "checkpoint.every_n_train_steps=0"]
    with open(run.parent / "resumed.log", "w") as out:
        resumed = subprocess.run(
            [sys.executable, str(ROOT / "train.py"), *words[2:]],
            cwd=run.parent,
            env=ENV,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=300,
        )
    assert resumed.returncode == 0, (run.parent / "resumed.log").read_text()[-3000:]
    assert f"Restoring states from the checkpoint path at {path}" in (run.parent / "resumed.log").read_text()
    assert load(run / "checkpoints" / "last.ckpt")["global_step"] == 2 * STEPS_PER_EPOCH


# -- extend a finished run -------------------------------------------------------------------------------
# 8 samples / batch 2 = 4 steps per epoch on 32x32 scenes; a constant LR (optim.scheduler=none): a schedule's
# length follows the run's length, so an extended run is equal to an uninterrupted one only without one
EXTEND = [
    "experiment=smoke",
    "backbone=mobilenetv3_large",
    "backbone.pretrained=false",
    "data.size=[32,32]",
    "data.train_length=8",
    "data.val_length=4",
    "data.batch_size=2",
    "optim.scheduler=none",
    "trainer.deterministic=true",
    "trainer.enable_progress_bar=false",
    "logger=csv",
]


def train_into(compose, run_dir: Path, *extra: str) -> tuple[dict, str]:
    import contextlib
    import io

    import densekit.train as dk_train

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        dk_train.train(compose([*EXTEND, *extra, f"output_dir={run_dir}"]))
    return dict(dk_train.last_run), out.getvalue()


@pytest.mark.slow
def test_extend_max_steps_2_to_4_equals_an_uninterrupted_4_step_run(compose, tmp_path):
    straight, extended = tmp_path / "straight", tmp_path / "extended"
    train_into(compose, straight, "trainer.max_steps=4")
    first, _ = train_into(compose, extended, "trainer.max_steps=2")
    assert first["steps_trained"] == 2 and load(extended / "checkpoints" / "last.ckpt")["global_step"] == 2
    rows = (extended / "csv" / "metrics.csv").read_text().splitlines()
    summary, out = train_into(compose, extended, "trainer.max_steps=4", "ckpt_path=last")
    # before: "`Trainer.fit` stopped: `max_epochs=1` reached." after 0 steps (the step-2 checkpoint, written at
    # the epoch end that max_steps forced, marked the epoch finished). Asserted on the steps, not on
    # Lightning's log line: earlier tests in the suite (Hydra's job logging) change where that line goes
    assert summary["start_step"] == 2 and summary["steps_trained"] == 2 and summary["global_step"] == 4
    assert_same_state(load(straight / "checkpoints" / "last.ckpt"), load(extended / "checkpoints" / "last.ckpt"))
    assert (extended / "csv" / "metrics.csv").read_text().splitlines()[: len(rows)] == rows  # appended
    assert "Final validation metrics (best checkpoint):" in out  # the 4th step closed the epoch: validated


@pytest.mark.slow
def test_extend_after_max_epochs_trains_the_next_epoch_like_an_uninterrupted_run(compose, tmp_path):
    straight, extended = tmp_path / "straight", tmp_path / "extended"
    _, straight_out = train_into(compose, straight, "trainer.max_epochs=2")
    train_into(compose, extended, "trainer.max_epochs=1")
    summary, out = train_into(compose, extended, "trainer.max_epochs=2", "ckpt_path=last")
    assert summary["start_step"] == 4 and summary["steps_trained"] == 4
    assert_same_state(load(straight / "checkpoints" / "last.ckpt"), load(extended / "checkpoints" / "last.ckpt"))
    names = lambda d: sorted(p.name for p in (d / "checkpoints").glob("best-*.ckpt"))  # noqa: E731
    assert names(straight) == names(extended) and len(names(extended)) == 1  # no stale best of the first part
    assert "val/mIoU" in final_metrics(out) and final_metrics(out) == final_metrics(straight_out)


def test_extending_a_scheduled_run_warns_that_the_schedule_changes(compose, tmp_path):
    from densekit.resume import resume_warnings

    path = tmp_path / "last.ckpt"
    saved = {"trainer": {"max_steps": 2, "max_epochs": 1}}
    torch.save({"state_dict": {}, "global_step": 2, "hyper_parameters": {"config": saved}}, path)
    step, warnings = resume_warnings(compose(["experiment=smoke", "trainer.max_steps=4"]), path)
    assert step == 2 and len(warnings) == 1
    assert warnings[0].startswith(
        "resuming at step 2 with trainer.max_steps 2 -> 4: the cosine LR schedule's length follows the run's length"
    )
    assert resume_warnings(compose(["experiment=smoke", "trainer.max_steps=4", "optim.scheduler=none"]), path) == (
        2,
        [],
    )


# -- atomic checkpoints ---------------------------------------------------------------------------------
def test_failed_save_keeps_the_previous_checkpoint_and_no_temp_file(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.arange(4.0)}, "global_step": 3}, path)
    real_save = torch.save

    def half_then_disk_full(obj, f, *args, **kwargs):
        import io as _io

        buffer = _io.BytesIO()
        real_save(obj, buffer)
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])  # half the bytes reach the disk ...
        raise OSError(errno.ENOSPC, "No space left on device")  # ... then the disk is full

    monkeypatch.setattr(torch, "save", half_then_disk_full)
    with pytest.raises(OSError, match="No space left"):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(1000)}, "global_step": 4}, path)
    monkeypatch.undo()
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["global_step"] == 3 and torch.equal(ckpt["state_dict"]["w"], torch.arange(4.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_stale_temp_files_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".last.ckpt.tmp-{int(dead.stdout)}"
    alive = tmp_path / f".last.ckpt.tmp-{os.getpid()}"  # a save in progress: must be left alone
    stale.write_bytes(b"half")
    alive.write_bytes(b"half")
    assert remove_stale_temp_files(tmp_path) == [stale]
    assert not stale.exists() and alive.exists()


@pytest.mark.slow
def test_nan_loss_never_leaves_a_non_finite_checkpoint(compose, tmp_path):
    from densekit.train import train

    cfg = compose(
        [
            "experiment=smoke",
            "backbone=mobilenetv3_large",
            "backbone.pretrained=false",
            "data.train_length=12",
            "optim.lr=1e30",
            "optim.scheduler=none",
            "trainer.gradient_clip_val=null",
            "checkpoint.every_n_train_steps=1",
            "trainer.enable_progress_bar=false",
            "logger=none",
            f"output_dir={tmp_path}",
        ]
    )
    # weights ~1e30 after step 1 (its checkpoint is still finite): the next loss is not finite
    with pytest.raises(FloatingPointError, match="non-finite training loss"):
        train(cfg)
    for path in (tmp_path / "checkpoints").glob("*.ckpt"):
        for name, value in load(path)["state_dict"].items():
            if value.is_floating_point():
                assert torch.isfinite(value).all(), f"{path.name}: {name} holds non-finite values"
    assert not list((tmp_path / "checkpoints").glob(".*tmp-*"))


def test_no_checkpoint_of_non_finite_weights_is_written():
    """A finite loss whose update overflowed: the save is refused before anything is written."""
    from types import SimpleNamespace

    module = torch.nn.Linear(2, 2)
    guard = FiniteWeights()
    guard.on_save_checkpoint(SimpleNamespace(global_step=5), module, {})  # finite: accepted
    with torch.no_grad():
        module.weight[0, 1] = float("inf")
    with pytest.raises(FloatingPointError, match=r"after step 5 in 1 parameter\(s\) \(e.g. \['weight'\]\)"):
        guard.on_save_checkpoint(SimpleNamespace(global_step=5), module, {})


# -- checks before training ------------------------------------------------------------------------------
def test_ckpt_path_last_without_a_checkpoint_is_a_clear_error(compose, tmp_path):
    from densekit.train import train

    cfg = compose(["experiment=smoke", "ckpt_path=last", f"output_dir={tmp_path}"])
    with pytest.raises(FileNotFoundError, match=r"ckpt_path=last: no checkpoint at .*checkpoints/last.ckpt"):
        train(cfg)


def test_checkpoint_of_another_backbone_is_refused_naming_both(tmp_path):
    path = tmp_path / "other.ckpt"
    saved = {"task": {"name": "seg"}, "backbone": {"name": "mci2"}, "head": {"name": "lraspp"}}
    torch.save({"state_dict": {}, "hyper_parameters": {"config": saved}}, path)
    check_resume_checkpoint(path, saved)  # the same parts: accepted
    wanted = {**saved, "backbone": {"name": "mci0"}}
    with pytest.raises(
        ValueError,
        match=r"trained with task=seg backbone=mci2 head=lraspp, but this run is "
        r"task=seg backbone=mci0 head=lraspp",
    ):
        check_resume_checkpoint(path, wanted)
    torch.save({"weights": 1}, tmp_path / "plain.ckpt")
    with pytest.raises(ValueError, match="is not a Lightning checkpoint"):
        check_resume_checkpoint(tmp_path / "plain.ckpt", wanted)


def test_gpu_trainer_without_gpus_fails_before_training(compose, tmp_path, monkeypatch):
    from densekit.train import train

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    cfg = compose(["experiment=smoke", "trainer=ddp", f"output_dir={tmp_path / 'run'}"])
    with pytest.raises(RuntimeError, match=r"needs 1 CUDA GPU\(s\), but 0 are visible.*trainer=ddp_cpu"):
        train(cfg)
    assert not (tmp_path / "run").exists()  # nothing was built or written
