"""Sweeps: `train.py -m sweep=grid|optuna` in a subprocess with tiny trials, result.json per trial (failed
ones too), scripts/sweep_report.py, and the unknown-parameter error before any trial."""

import csv
import json
import math
import os
import subprocess
import sys

import pytest
import yaml
from omegaconf import OmegaConf

from densekit import sweep_report
from densekit.sweeps import (
    check_sweep_params,
    head_width_choices,
    optuna_space,
    run_trial,
    train_size_choices,
)
from helpers import ROOT

# a few seconds per trial: 2 optimiser steps on 64x64 scenes, a 4-image validation
TINY = [
    "backbone.pretrained=false",
    "data.size=[64,64]",
    "data.train_length=8",
    "data.val_length=4",
    "data.batch_size=4",
    "trainer.max_steps=2",
    "trainer.val_check_interval=null",
    "trainer.num_sanity_val_steps=0",
    "trainer.enable_progress_bar=false",
    "logger=csv",
]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}


def _multirun(tmp_path, args):
    sweep_dir = tmp_path / "sweep"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "-m", *args, f"hydra.sweep.dir={sweep_dir}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=ENV,
    )
    return proc, sweep_dir


def _results(sweep_dir):
    return {int(p.parent.name): json.loads(p.read_text()) for p in sweep_dir.glob("*/result.json")}


@pytest.fixture(scope="module")
def grid_sweep(tmp_path_factory):
    # grid: one backbone x {lraspp, revunet3d}; revunet3d is a 3D head, so trial 1 fails in check_config
    tmp = tmp_path_factory.mktemp("grid")
    return _multirun(
        tmp,
        [
            "sweep=grid",
            "hydra.sweeper.params.backbone=mobilenetv3_large",
            "hydra.sweeper.params.head='lraspp,revunet3d'",
            *TINY,
        ],
    )


@pytest.fixture(scope="module")
def optuna_sweep(tmp_path_factory):
    # 2 TPE trials. `head` is swept too, so that one trial fails: with sampler seed 0 (seed=0, optuna 2.10.1)
    # the two random start-up trials draw lraspp, then revunet3d.
    tmp = tmp_path_factory.mktemp("optuna")
    return _multirun(
        tmp,
        [
            "sweep=optuna",
            "hydra.sweeper.n_trials=2",
            "backbone=mobilenetv3_large",
            "head=lraspp,revunet3d",
            "seed=0",
            *TINY,
        ],
    )


@pytest.mark.slow
def test_grid_sweep_logs_failed_trial_and_goes_on(grid_sweep):
    proc, sweep_dir = grid_sweep
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = _results(sweep_dir)
    assert sorted(results) == [0, 1]
    ok, failed = results[0], results[1]
    assert ok["status"] == "ok" and {"head=lraspp", "backbone=mobilenetv3_large"} <= set(ok["overrides"])
    assert ok["monitor"] == "val/mIoU" and ok["direction"] == "maximize"
    assert ok["objective"] == ok["metrics"]["val/mIoU"] and 0.0 <= ok["objective"] <= 1.0
    assert ok["best_checkpoint"].endswith(".ckpt") and os.path.isfile(ok["best_checkpoint"])
    assert ok["wall_time_s"] > 0 and len(ok["git_commit"]) in (40, 7)  # a sha, or "unknown"
    assert failed["status"] == "failed" and failed["objective"] is None and failed["metrics"] == {}
    assert failed["error"].startswith("ValueError: head=revunet3d does not fit task=seg")
    # the traceback is kept in the trial directory, in error.txt and in the trial's Hydra log
    assert "Traceback" in (sweep_dir / "1" / "error.txt").read_text()
    log_text = (sweep_dir / "1" / "train.log").read_text()
    assert "trial 1 failed" in log_text and "check_config" in log_text


@pytest.mark.slow
def test_sweep_report_table(grid_sweep):
    _, sweep_dir = grid_sweep
    text = sweep_report.report(sweep_dir)
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[0].split(" | ")[:4] == ["| rank", "trial", "status", "val/mIoU (max)"]
    assert "head" in rows[0] and "backbone" not in rows[0]  # only the overrides that differ are columns
    assert rows[1].startswith("| 1 | 0 | ok |") and "lraspp" in rows[1]
    assert rows[2].startswith("| - | 1 | failed |") and "revunet3d does not fit task=seg" in rows[2]
    assert "2 trials, 1 ok, 1 failed" in text
    assert (sweep_dir / "sweep_report.md").read_text().strip() == text.strip()
    with open(sweep_dir / "sweep_report.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["status"] for r in table] == ["ok", "failed"]
    assert float(table[0]["objective"]) == _results(sweep_dir)[0]["objective"]  # full precision in the CSV
    assert table[0]["head"] == "lraspp" and table[1]["head"] == "revunet3d" and table[0]["val/pixel_acc"]


@pytest.mark.slow
def test_optuna_sweep_returns_objective_and_survives_a_failed_trial(optuna_sweep):
    proc, sweep_dir = optuna_sweep
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Directions: ['maximize']" in proc.stdout + proc.stderr  # from task.sweep_direction (seg)
    results = _results(sweep_dir)
    assert sorted(results) == [0, 1]
    by_status = {r["status"]: r for r in results.values()}
    assert set(by_status) == {"ok", "failed"}, [r["status"] for r in results.values()]
    ok = by_status["ok"]
    params = dict(o.split("=", 1) for o in ok["overrides"])
    assert 1e-4 <= float(params["optim.lr"]) <= 1e-2 and 1e-5 <= float(params["optim.weight_decay"]) <= 1e-1
    assert params["data.size"] == "[64,64]"  # fixed on the command line: not searched
    assert "head.inter_channels" not in params  # head is swept: no head-width parameter
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    # optuna got the float the shim returned; the failed trial returned -inf (the worst when maximising)
    assert best["best_value"] == pytest.approx(ok["objective"]) and best["best_params"]["head"] == "lraspp"
    assert by_status["failed"]["error"].startswith("ValueError: head=revunet3d does not fit task=seg")


def test_unknown_sweep_parameter_fails_before_any_trial(tmp_path):
    conf = tmp_path / "conf" / "sweep"
    conf.mkdir(parents=True)
    (conf / "typo.yaml").write_text(
        "# @package _global_\n"
        "defaults:\n  - override /hydra/sweeper: basic\n"
        "hydra:\n  sweeper:\n    params:\n      optim.lrr: 1e-3,2e-3\n"
        "  callbacks:\n    check_sweep_params:\n      _target_: densekit.sweeps.CheckSweepParams\n"
    )
    proc, sweep_dir = _multirun(tmp_path, ["sweep=typo", f"hydra.searchpath=[file://{tmp_path / 'conf'}]"])
    assert proc.returncode == 1
    assert (
        "sweep parameter 'optim.lrr' does not exist in the config: 'optim' has no key 'lrr'. Did you mean 'optim.lr'?"
    ) in proc.stderr
    valid = sorted(yaml.safe_load((ROOT / "conf" / "optim" / "adamw.yaml").read_text()))  # the default optim
    assert {"lr", "weight_decay", "no_decay", "backbone_lr_mult"} <= set(valid)
    assert f"Valid keys of 'optim': {valid}" in proc.stderr
    assert not list(tmp_path.glob("sweep/*/"))  # no trial started


def _with_hydra(cfg, hydra: dict):
    """``cfg`` plus a hand-written ``hydra`` node, as the multirun config a sweeper/callback receives."""
    OmegaConf.set_struct(cfg, False)
    return OmegaConf.merge(cfg, {"hydra": hydra})


def _multirun_config(compose, params: dict, task_overrides: list[str]):
    cfg = compose(["sweep=grid"])
    hydra = {
        "sweeper": {"params": params},
        "overrides": {"task": task_overrides},
        "runtime": {
            "choices": {
                "backbone": "mci2",
                "head": "lraspp",
                "data": "synthetic",
                "task": "seg",
                "optim": "adamw",
                "trainer": "default",
                "logger": "csv",
            }
        },
    }
    return _with_hydra(cfg, hydra)


def test_check_sweep_params(compose):
    ok = _multirun_config(
        compose,
        {"backbone": "mci0,mobilenetv3_large", "optim.lr": "1e-3,2e-3"},
        ["head=lraspp,fpn", "head.inter_channels=64,128", "+optim.new=1,2", "data.size=[64,64]"],
    )
    check_sweep_params(ok)  # groups, group-swept sub-keys, "+" additions and existing keys pass
    bad = _multirun_config(compose, {}, ["data.augment.hflipp=0.1,0.2"])
    message = r"'data.augment' has no key 'hflipp'. Did you mean 'data.augment.hflip'"
    with pytest.raises(ValueError, match=message):
        check_sweep_params(bad)
    top = _multirun_config(compose, {"optimm.lr": "1e-3,2e-3"}, [])
    with pytest.raises(ValueError, match=r"'<root>' has no key 'optimm'. Did you mean 'optim'\?"):
        check_sweep_params(top)


def test_sweep_direction_follows_the_task_monitor(compose):
    from densekit.tasks import TASKS, get_task

    assert sorted(TASKS) == ["depth", "flow", "seg", "volume"]
    for task in TASKS:
        cfg = compose([f"task={task}"])
        module = get_task(task)
        assert cfg.task.monitor == module.monitor
        assert cfg.task.sweep_direction == {"max": "maximize", "min": "minimize"}[module.monitor_mode], task


def test_optuna_space_follows_head_and_data(compose):
    class FakeTrial:
        def __init__(self):
            self.asked = {}

        def suggest_categorical(self, name, choices):
            self.asked[name] = choices
            return choices[0]

    lraspp = {"name": "lraspp", "inter_channels": 128}
    assert head_width_choices(lraspp) == {"head.inter_channels": [64, 128, 256]}
    assert head_width_choices({"name": "unet", "decoder_channels": [256, 128, 64, 32]}) == {
        "head.decoder_channels": ["[128,64,32,16]", "[256,128,64,32]", "[512,256,128,64]"]
    }
    assert head_width_choices({"name": "revunet3d"}) == {}
    assert train_size_choices({"size": [128, 128]}) == {"data.size": ["[96,96]", "[128,128]", "[160,160]"]}
    assert train_size_choices({"size": [128, 128], "augment": {"crop": [512, 512]}}) == {
        "data.augment.crop": ["[256,256]", "[384,384]", "[512,512]"]
    }
    assert train_size_choices({"size": [48, 48, 48], "patch": [32, 32, 32]}) == {
        "data.patch": ["[16,16,16]", "[32,32,32]"]
    }

    trial = FakeTrial()
    cfg = _with_hydra(
        compose(["task=depth"]),
        {
            "sweeper": {"params": {"optim.lr": "tag(log, interval(1e-4, 1e-2))"}},
            "overrides": {"task": ["task=depth", "data.size=[64,64]"]},
        },
    )
    optuna_space(cfg, trial)
    # depth's default head is fpn: both of its widths; data.size is fixed on the command line
    assert trial.asked == {"head.pyramid_channels": [128, 256, 512], "head.segmentation_channels": [64, 128, 256]}


def test_run_trial_records_success_and_failure(compose, tmp_path):
    cfg = compose([f"output_dir={tmp_path}"])
    value = run_trial(cfg, train_fn=lambda c: {"val/mIoU": 0.25, "val/loss": 1.5})
    record = json.loads((tmp_path / "result.json").read_text())
    assert value == 0.25 and record["status"] == "ok" and record["objective"] == 0.25
    assert record["metrics"] == {"val/mIoU": 0.25, "val/loss": 1.5} and record["trial"] is None

    value = run_trial(cfg, train_fn=lambda c: {"val/loss": 1.5})  # the monitored metric is missing
    record = json.loads((tmp_path / "result.json").read_text())
    assert value == -math.inf and record["status"] == "no_objective" and record["objective"] is None
    assert "val/mIoU is missing" in record["error"]

    def boom(c):
        raise RuntimeError("out of memory\nsecond line")

    with pytest.raises(RuntimeError, match="out of memory"):  # outside a sweep the error propagates
        run_trial(cfg, train_fn=boom)
    record = json.loads((tmp_path / "result.json").read_text())
    assert record["status"] == "failed" and record["error"] == "RuntimeError: out of memory"
    assert "boom" in (tmp_path / "error.txt").read_text()


def test_sweep_report_minimize_and_missing_trials(tmp_path):
    for n, value in enumerate([0.5, 0.2, None]):
        d = tmp_path / str(n)
        (d / ".hydra").mkdir(parents=True)
        record = {
            "status": "ok" if value is not None else "failed",
            "monitor": "val/epe",
            "direction": "minimize",
            "objective": value,
            "overrides": [f"optim.lr={0.001 * (n + 1)}", "task=flow"],
            "metrics": {},
            "wall_time_s": 1.0,
            "error": None if value is not None else "ValueError: bad",
        }
        (d / "result.json").write_text(json.dumps(record))
    (tmp_path / "3" / ".hydra").mkdir(parents=True)  # a trial killed before it wrote its result
    text = sweep_report.report(tmp_path)
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[0] == "| rank | trial | status | val/epe (min) | optim.lr | wall (s) | error |"
    assert [r.split(" | ")[1] for r in rows[1:]] == ["1", "0", "2", "3"]  # 0.2 before 0.5, then the rest
    assert rows[4].startswith("| - | 3 | missing |") and "no result.json" in rows[4]
    with pytest.raises(FileNotFoundError, match="sweep directory not found"):
        sweep_report.report(tmp_path / "nope")
    script = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "sweep_report.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=ENV,
    )
    assert script.returncode == 0 and script.stdout.strip() == text.strip()  # the script prints the same table
