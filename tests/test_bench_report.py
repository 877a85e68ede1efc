"""`benchmark.py report`: one table from the benchmarks that own each figure; a failure is a row, never a gap."""

import math

import pytest

from densekit.benchmarks import BENCHMARKS, main
from densekit.benchmarks import report as report_module


@pytest.mark.slow
def test_report_quick_rows_are_numbers(capsys):
    rows = main(["report", "--quick", "--only", "heads", "scan"])
    assert [r.benchmark for r in rows] == ["heads", "scan", "scan"]
    for r in rows:
        assert not r.failed and math.isfinite(r.ratio) and r.ratio > 0
    # the compiled scan beats the Python recurrence even at the tiny size (a ratio, not a timing)
    assert rows[1].ratio < 1
    out = capsys.readouterr().out
    assert "| benchmark | measure | densekit | baseline | ratio | goal |" in out
    assert out.count("\n| heads |") == 1 and out.count("\n| scan |") == 2
    assert "load average" in out


def test_a_failing_benchmark_is_a_failed_row_and_a_nonzero_exit(monkeypatch, capsys):
    def broken(quick, verbose):
        raise RuntimeError("no such model")

    monkeypatch.setitem(report_module.SECTIONS, "flow", broken)
    with pytest.raises(SystemExit) as stop:
        main(["report", "--quick", "--only", "flow"])
    assert stop.value.code == 1
    captured = capsys.readouterr()
    assert "| flow | (the whole benchmark) | failed | RuntimeError: no such model | - |  |" in captured.out
    assert "1 benchmark(s) failed: flow" in captured.err


def test_unknown_section_is_one_line():
    with pytest.raises(SystemExit, match=r"unknown section\(s\) \['nope'\]"):
        main(["report", "--only", "nope"])


def test_every_benchmark_but_the_small_ones_has_a_section():
    # backbones is a per-backbone table without a baseline: nothing in it is a ratio the README quotes
    assert set(report_module.SECTIONS) | {"backbones", "report"} >= set(BENCHMARKS)


def test_scan_rows_carry_the_lightm_forward_and_its_goal(monkeypatch):
    out = {
        "densekit.ops.selective_scan fwd": 0.01,
        "naive recurrence fwd": 0.2,
        "lightm 2D fwd 256^2 (B=1) compiled": 0.8,
        "lightm 2D fwd 256^2 (B=1) PyTorch scan": 2.4,
    }
    monkeypatch.setattr(report_module, "_call", lambda argv, verbose: out)
    rows = report_module.scan_rows(False, False)
    assert [r.measure.split(",")[0] for r in rows] == ["selective scan forward", "LightM-UNet 2D forward at 256² (B=1"]
    assert rows[0].ratio == pytest.approx(0.05) and rows[0].goal == "≤ 0.1"
    assert rows[1].value == "0.800 s" and rows[1].ratio == pytest.approx(1 / 3) and rows[1].goal == "≤ 0.5 s"
