"""Benchmarks: `python scripts/benchmark.py <name> [options]`; `--help` lists the names, `<name> --help`
gives a benchmark's options. Each is one module of densekit.benchmarks; the measured results are in
README.md.
"""

from densekit.benchmarks import main

if __name__ == "__main__":
    main()
