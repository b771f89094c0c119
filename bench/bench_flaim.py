"""FLAIM benchmark: AIM and the federated variants on Adult / marketing / census.

Thin wrapper around ``fedsynth bench flaim`` (same options), e.g.::

    FEDSYNTH_DATA=../shared/datasets nice -n 10 python bench/bench_flaim.py --dataset adult \
        --methods aim distaim naive aug-oracle aug-private flaim-sa --epsilons 1 3 --seeds 3 \
        --json bench/results/flaim_adult.json --plot bench/results/flaim_adult

Prints one row per (method, ε) with mean ± sd over seeds and writes the JSON document
``{"dataset","split","clients","participation","rounds","results":[...]}``.
"""

from __future__ import annotations

import sys

from typer.main import get_command

from fedsynth.cli import app


def main(argv: list[str] | None = None) -> None:
    cmd = get_command(app)
    cmd.main(args=["bench", "flaim", *(sys.argv[1:] if argv is None else argv)], prog_name="bench_flaim")


if __name__ == "__main__":
    main()
