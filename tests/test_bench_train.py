"""scripts/benchmark.py train: the Lightning-vs-bare training-loop benchmark runs and reports sane numbers."""

import sys

import pytest
import torch

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import benchmark  # noqa: E402


@pytest.mark.slow
def test_bench_train_tiny(capsys):
    threads = torch.get_num_threads()
    try:
        out = benchmark.bench_train(["--size", "32", "--batch", "2", "--steps", "2", "--rounds", "2",
                                     "--warmup", "1"])
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


def test_bench_train_rejects_other_optimisers():
    with pytest.raises(SystemExit, match="mirrors optim=adamw only, got optim.name=sgd"):
        benchmark.bench_train(["--size", "32", "--batch", "2", "--steps", "1", "--rounds", "1", "optim=sgd"])
