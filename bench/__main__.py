"""`python -m bench`: the default benchmark on one machine with tiny.en (bench/README.md says
how long it takes).

The capacity search (Chorus, then the naive server, N = 1, 2, 4, 8, each N live together for a
minute after an unscored warm-up) and the offline file throughput, one after the other, each
with its own defaults; every file lands in `bench/results/`. `--model` and `--out` are passed
to both; run `python -m bench.load` or `python -m bench.offline` for their other options.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from bench import load, offline
from bench.report import DEFAULT_RESULTS


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--out", default=str(DEFAULT_RESULTS))
    arguments = parser.parse_args(argv)
    common = ["--model", arguments.model, "--out", arguments.out]
    load.main(common)
    offline.main(common)


if __name__ == "__main__":
    main()
