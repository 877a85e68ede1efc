"""Benchmarks, measured side by side in one run and reported as medians and ratios
(``python scripts/benchmark.py <name> [options]``; ``<name> --help`` gives its options).

One module per benchmark (``BENCHMARKS``: subcommand -> module, summary), each with ``add_arguments(parser)``
and ``run(args)``, which prints its table and returns its rows. Shared helpers: ``timing`` (warm-up, repeats,
median, ratio), ``cost`` (params, MACs), ``memory`` (peak memory, measurements in a fresh process). Measured
results belong in README.md, not in the code.
"""

from __future__ import annotations

import argparse
import importlib

BENCHMARKS = {
    "data": ("data", "batch generation of the synthetic scenes vs one training step, as a ratio"),
    "heads": ("heads", "LR-ASPP vs torchvision's side by side; params/GMACs/latency per backbone x head"),
    "backbones": ("backbones", "params/GMACs/latency/peak forward memory per backbone and input size"),
    "scan": ("scan", "selective scan: compiled vs chunked PyTorch vs mambapy vs the plain recurrence"),
    "flow": ("flow", "CompactFlowNet vs torchvision RAFT-small: params, GMACs, CPU latency, ratio"),
    "models": ("models", "params, MACs, eager vs ONNX Runtime latency, memory per backbone x head x task"),
    "train": ("training", "images/s of the Lightning loop vs a bare PyTorch loop, data-wait share"),
    "memory3d": ("memory3d", "reversible vs stored 3D U-Net: peak training memory, largest cube in a budget"),
    "settings": ("settings", "fp32 vs bf16 autocast vs channels_last per backbone, each in a fresh process"),
    "report": ("report", "every ratio the README quotes, in one process and one sitting: one table"),
}


def parser(prog: str = "benchmark.py") -> argparse.ArgumentParser:
    """The command line: one subcommand per benchmark, each with its module's options."""
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    for name, (module_name, summary) in BENCHMARKS.items():
        module = importlib.import_module(f"{__name__}.{module_name}")
        sp = sub.add_parser(
            name, help=summary, description=module.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        module.add_arguments(sp)
        sp.set_defaults(run=module.run)
    return p


def main(argv: list[str] | None = None):
    """Parse ``argv`` (``<benchmark> [options]``; default: the process's arguments) and run that benchmark;
    returns its result."""
    args = parser().parse_args(argv)
    return args.run(args)
