"""densekit.benchmarks: the shared timing helpers, the command line README quotes, and the Lightning-vs-bare
training-loop benchmark (tiny sizes), whose bare loop uses the task's own optimiser and schedule."""

import math
import re
import shlex

import pytest
import torch

from densekit.benchmarks import BENCHMARKS, main, parser
from densekit.benchmarks.memory import PeakMemory, in_fresh_process
from densekit.benchmarks.timing import interleaved_medians, interleaved_times, median_time, ratio
from densekit.benchmarks.training import build_run, task_optimizer
from helpers import ROOT


def test_timing_helpers_warm_up_repeat_and_interleave():
    calls = []
    assert median_time(lambda: calls.append("f"), repeats=3, warmup=2, sync=lambda: calls.append("s")) >= 0
    assert calls == ["f", "s"] * 5  # 2 warm-up + 3 timed calls, each followed by its sync
    order = []
    times = interleaved_times({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, 3, warmup=1)
    assert order == ["a", "b"] * 4 and [len(t) for t in times.values()] == [3, 3]
    assert set(interleaved_medians({"a": lambda: None}, 2)) == {"a"}
    assert ratio(3.0, 2.0) == 1.5 and math.isnan(ratio(1.0, 0.0)) and math.isnan(ratio(1.0, math.nan))


def test_peak_memory_and_fresh_process_guard():
    with PeakMemory("cpu") as peak:
        block = torch.ones(64, 2**20 // 4)  # 64 MiB, touched
    assert peak.method.startswith("peak RSS") and math.isfinite(peak.mib) and block.sum() > 0
    with pytest.raises(ValueError, match="runs densekit.benchmarks functions"):
        in_fresh_process(math.sqrt, {})


def test_every_readme_benchmark_line_parses():
    quoted = re.findall(r"scripts/benchmark\.py ([^#`\n]*)", (ROOT / "README.md").read_text())
    assert quoted, "README quotes no benchmark command"
    names = set()
    for line in quoted:
        args = parser().parse_args(shlex.split(line))
        names.add(args.benchmark)
        assert callable(args.run)
    assert names == set(BENCHMARKS)  # README shows every benchmark


def _tiny(*extra):
    return parser().parse_args(["train", "--size", "32", "--batch", "2", "--steps", "1", "--rounds", "1", *extra])


@pytest.mark.parametrize("optim", ["sgd", "adamw"])
def test_bare_loop_optimiser_is_the_tasks_own(optim):
    """Not a copy of configure_optimizers: the task's own, for any optimiser, over the run's step count."""
    _, _, module = build_run(_tiny(f"optim={optim}"), n_round=10)
    cfg = module.optim_cfg
    opt, sched = task_optimizer(module, total_steps=10)
    assert type(opt) is {"sgd": torch.optim.SGD, "adamw": torch.optim.AdamW}[optim]
    params = [p for g in opt.param_groups for p in g["params"]]
    assert sorted(map(id, params)) == sorted(id(p) for p in module.parameters() if p.requires_grad)
    assert max(g["initial_lr"] for g in opt.param_groups) == pytest.approx(cfg["lr"])  # before the schedule
    assert max(g["weight_decay"] for g in opt.param_groups) == pytest.approx(cfg["weight_decay"])
    with pytest.raises(RuntimeError, match="not attached to a `Trainer`"):
        module.trainer  # noqa: B018 - task_optimizer leaves the module as it found it
    base = [g["initial_lr"] for g in opt.param_groups]
    for _ in range(10):  # the whole run: the schedule (cosine / poly) ends at min_lr_ratio
        opt.step()
        sched.step()
    for g, lr in zip(opt.param_groups, base):
        assert g["lr"] == pytest.approx(lr * cfg["min_lr_ratio"], abs=1e-12)


@pytest.mark.slow
def test_bench_train_tiny(capsys):
    threads = torch.get_num_threads()
    try:
        out = main(["train", "--size", "32", "--batch", "2", "--steps", "2", "--rounds", "2", "--warmup", "1"])
    finally:
        torch.set_num_threads(threads)
    rows = out["rows"]
    assert set(rows) == {"lightning", "bare"}
    for row in rows.values():
        assert row["n"] == 2 and row["step_ms"] > 0  # 1 timed step per round, 2 rounds
        assert row["images_per_s"] == pytest.approx(2 / (row["step_ms"] / 1000))
        assert 0 < row["data_wait_frac"] < 1 and row["data_wait_ms"] < row["step_ms"]
    assert out["overhead"] == pytest.approx(rows["lightning"]["step_ms"] / rows["bare"]["step_ms"] - 1)
    text = capsys.readouterr().out
    assert "| densekit (Lightning Trainer) |" in text and "| bare PyTorch loop |" in text
    assert "Lightning overhead:" in text
