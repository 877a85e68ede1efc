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
