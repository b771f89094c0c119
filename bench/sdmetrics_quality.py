"""SDMetrics' QualityReport (column shapes, column-pair trends) of each family on one silo.

For each family: silo 0 of 20 equal 5 % shares of the dataset's training split (seed 0) fits its
DP generators at ε = 1; its own generators draw 5,000 rows in the silo's class mix; SDMetrics
compares them with the silo's real rows.

``sdmetrics`` 0.32 requires pandas < 3 and fedsynth pins pandas 3.1, so it cannot live in the
project's environment: this script writes the tables as CSV and runs the report in a separate
interpreter (``--sdmetrics-python``, a venv with ``pip install sdmetrics==0.32.0``), the same
file re-entered with ``--report``.

    python -m venv /tmp/sdm-venv && /tmp/sdm-venv/bin/pip install sdmetrics==0.32.0
    python bench/sdmetrics_quality.py --dataset adult --families vae gan pgm diffusion \\
        --sdmetrics-python /tmp/sdm-venv/bin/python --json out/sdmetrics_adult.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path


def report(real_csv: str, synth_csv: str, schema_json: str) -> dict[str, float]:
    """Runs inside the sdmetrics interpreter (pandas 2)."""
    import pandas as pd
    from sdmetrics.reports.single_table import QualityReport

    schema = json.loads(Path(schema_json).read_text())
    meta = {
        "columns": {
            c["name"]: {"sdtype": "categorical" if c["kind"] == "categorical" else "numerical"}
            for c in schema["columns"]
        }
    }
    cats = [c["name"] for c in schema["columns"] if c["kind"] == "categorical"]
    real = pd.read_csv(real_csv, dtype={c: str for c in cats})
    synth = pd.read_csv(synth_csv, dtype={c: str for c in cats})
    r = QualityReport()
    r.generate(real, synth, meta, verbose=False)
    props = r.get_properties().set_index("Property")["Score"]
    return {
        "overall": float(r.get_score()),
        "column_shapes": float(props["Column Shapes"]),
        "column_pair_trends": float(props["Column Pair Trends"]),
    }


def tables(dataset: str, family: str, out: Path, seed: int = 0) -> None:
    """Runs in the project's interpreter: silo 0's real rows and its generators' synthetic rows."""
    import numpy as np

    from fedsynth.data.datasets import load_dataset
    from fedsynth.data.partition import equal_shares
    from fedsynth.generators.base import get_family
    from fedsynth.generators.pool import GeneratorPool
    from fedsynth.privacy.target import PrivacyTarget

    b = load_dataset(dataset, seed=seed)
    silo = b.train.iloc[equal_shares(len(b.train), 20, 0.05, seed=seed)[0]].reset_index(drop=True)
    fam = get_family(family)
    gs = fam.fit(silo, b.schema, PrivacyTarget(1.0), fam.default_config(b.name), seed=seed)
    y = silo[b.schema.target].astype(str)
    mix = {c: float(np.mean(y == c)) for c in b.schema.classes}
    syn = GeneratorPool(b.schema, gs.as_loaded()).sample(5000, seed=seed, class_weights=mix)
    silo.to_csv(out / "real.csv", index=False)
    syn.to_csv(out / "synth.csv", index=False)
    (out / "schema.json").write_text(b.schema.to_json())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--report", nargs=3, metavar=("REAL", "SYNTH", "SCHEMA"))
    ap.add_argument("--dataset", default="adult")
    ap.add_argument("--families", nargs="+", default=["vae", "gan", "pgm", "diffusion"])
    ap.add_argument("--sdmetrics-python", default=sys.executable)
    ap.add_argument("--json")
    a = ap.parse_args()
    if a.report:
        print(json.dumps(report(*a.report)))
        return
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    res: dict[str, dict[str, float]] = {}
    for fam in a.families:
        with tempfile.TemporaryDirectory() as d:
            tables(a.dataset, fam, Path(d))
            p = Path(d)
            cmd = [
                a.sdmetrics_python,
                __file__,
                "--report",
                str(p / "real.csv"),
                str(p / "synth.csv"),
                str(p / "schema.json"),
            ]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            res[fam] = json.loads(out.strip().splitlines()[-1])
        print(
            f"{a.dataset:14s} {fam:10s} " + "  ".join(f"{k} {v:.3f}" for k, v in res[fam].items()), flush=True
        )
    if a.json:
        Path(a.json).write_text(
            json.dumps({"dataset": a.dataset, "silo": 0, "epsilon": 1.0, "families": res}, indent=1)
        )


if __name__ == "__main__":
    main()
