"""Tabulate a Hydra sweep: `python scripts/sweep_report.py multirun/<date>/<time>`.

Writes sweep_report.csv and sweep_report.md into the multirun directory and prints the markdown table
(densekit.sweep_report).
"""

from __future__ import annotations

import argparse

from densekit.sweep_report import report


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep_dir", help="the multirun directory, e.g. multirun/2025-01-31/12-00-00")
    args = p.parse_args(argv)
    print(report(args.sweep_dir))


if __name__ == "__main__":
    main()
