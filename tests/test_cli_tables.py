"""Every CLI table keeps each value whole and on one line: at 80 columns, when piped, and even on a
console narrower than the table (then the table overflows instead of cutting a value)."""

from __future__ import annotations

import inspect
import io
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from rich.cells import cell_len
from typer.testing import CliRunner

from fedsynth.audit.canary import CanaryAudit
from fedsynth.audit.membership import DCRResult, MembershipAudit
from fedsynth.audit.poison import GeneratorScore, PoolScreen
from fedsynth.audit.report import AuditReport
from fedsynth.audit.stats import AttackResult, OneRunResult
from fedsynth.cli import app
from fedsynth.cli import flaim as flaim_cli
from fedsynth.cli import sgde as sgde_cli
from fedsynth.cli.hub import print_screen, screen_report
from fedsynth.cli.tables import PIPED_WIDTH, make_console, new_table, render_text

runner = CliRunner()


def assert_whole(text: str, values: list[str], fit: int | None = 80) -> None:
    """Each value on one line, nothing cut with "…", and (if ``fit``) no line wider than ``fit``."""
    lines = text.splitlines()
    missing = [v for v in values if not any(v in line for line in lines)]
    assert not missing, f"not whole on one line: {missing}\n{text}"
    assert "…" not in text, text
    if fit is not None:
        widest = max(cell_len(line.rstrip()) for line in lines)
        assert widest <= fit, f"{widest} columns > {fit}:\n{text}"


# -- SGDE results (demo, bench sgde) ----------------------------------------------------------

SCENARIOS = [
    "local",
    "federated",
    "synthetic",
    "synthetic_balanced",
    "local_plus_synthetic",
    "local_plus_synthetic_rows",
    "pooled_real",
]
NAMES = [
    "Local",
    "FedAvg",
    "Synthetic",
    "Synthetic (SGDE protocol)",
    "Local + Synthetic",
    "Local + Synthetic rows",
    "Pooled real",
]


def sgde_result(seeds: int = 3, dataset: str = "titanic") -> dict[str, Any]:
    """The layout ``fedsynth bench sgde --json`` writes, with wide numbers (100.00, sd ≥ 10)."""
    means, sds = {}, {}
    for k, sc in enumerate(SCENARIOS):
        m = {
            "accuracy": 60.0 + k + 0.123,
            "f1": 47.65 if sc == "synthetic_balanced" else 10.0 + k,
            "auc": 100.0,
        }
        s = {"accuracy": 0.95, "f1": 14.91 if sc == "synthetic_balanced" else 1.0 + k, "auc": 0.0}
        means[sc] = {"local_eval": m, "test_eval": m}
        sds[sc] = {"local_eval": s, "test_eval": s}
    return {
        "dataset": dataset,
        "generator": "dp-vae/1",
        "silos": 20,
        "epsilon_target": 1.0,
        "epsilon_spent_max": 0.9979,
        "delta": 0.01,
        "seeds": seeds,
        "scenarios": means,
        "scenarios_sd": sds,
        "per_seed": [{"scenarios": means} for _ in range(seeds)],
        "timing": {"total_s": 85.6},
    }


def test_sgde_results_fit_80_columns_with_plain_names_and_the_paper_row() -> None:
    res = sgde_result()
    paper = sgde_cli.PAPER_TABLE_I["titanic"]
    text = render_text(
        [
            sgde_cli._results_table(
                "titanic — 20 silos, evaluated on local data (Table I)", res, "local_eval", paper
            )
        ]
    )
    assert_whole(text, [*NAMES, "60.12 ± 0.95", "47.65 ± 14.91", "100.00 ± 0.00", "80.87", "63.37", "78.35"])
    # one row per scenario: each name starts its own line, in the experiment's order
    starts = [line.strip() for line in text.splitlines()]
    rows = [next(i for i, s in enumerate(starts) if s.startswith(n + "  ")) for n in NAMES]
    assert rows == sorted(rows)
    assert text.count("paper (Table I)") == 3  # under Local, FedAvg and the SGDE protocol row
    test_eval = render_text([sgde_cli._results_table("t", res, "test_eval", paper)])
    assert "paper" not in test_eval  # the paper's Table I is on local data


def test_sgde_single_seed_has_no_sd() -> None:
    text = render_text([sgde_cli._results_table("demo", sgde_result(seeds=1), "test_eval", None)])
    assert_whole(text, [*NAMES, "60.12", "100.00"])
    assert "±" not in text


def test_sgde_legend_explains_each_scenario_and_marks_the_paper_protocol() -> None:
    text = render_text(sgde_cli._legend(SCENARIOS, paper=True))
    assert_whole(text, NAMES)
    for name in NAMES:
        (line,) = [ln for ln in text.splitlines() if ln.startswith(name + "  ")]
        assert len(line.split()) > len(name.split()) + 2, line  # a description on the same line
    (proto,) = [ln for ln in text.splitlines() if ln.startswith("Synthetic (SGDE protocol)")]
    assert "paper" in proto


def test_claims_table_fits() -> None:
    dp = SimpleNamespace(
        mechanism="dp-sgd",
        epsilon=0.99791,
        delta=1e-5,
        noise_multiplier=1.2345,
        sample_rate=0.01234,
        steps=12345,
    )
    zc = SimpleNamespace(
        mechanism="zcdp", epsilon=0.9979, delta=1e-6, rho=0.012345, sigma=12.3, selections=24
    )
    reps = [
        SimpleNamespace(class_label="poisonous", n_rows=123456, seconds=1234.5, claim=dp),
        SimpleNamespace(class_label=None, n_rows=999, seconds=0.3, claim=dp),
    ]
    text = render_text(claims := sgde_cli.claims_table("dp-vae/1 generators written to out/gens", reps))
    assert_whole(
        text,
        ["poisonous", "123456", "(all)", "0.9979", "1e-05", "dp-sgd", "1.234", "0.0123", "12345", "1234.5"],
    )
    assert len(claims.columns) == 9  # σ, q, steps as columns of their own
    text = render_text(
        sgde_cli.claims_table(
            "pgm/1 generators", [SimpleNamespace(class_label=None, n_rows=5, seconds=1.0, claim=zc)]
        )
    )
    assert_whole(text, ["zcdp", "0.01235", "12.3", "24", "1e-06"])


# -- bench flaim -------------------------------------------------------------------------------


def flaim_results() -> list[dict[str, Any]]:
    rows = []
    for seed in (0, 1):
        for mth in ("aim", "aim-adaptive", "aug-private", "flaim-da"):
            for e in (1.0, 3.0):
                rows.append(
                    {
                        "method": mth,
                        "epsilon": e,
                        "rounds": 10,
                        "seed": seed,
                        "l1": 0.128,
                        "nll": 123.45 + seed,
                        "auc": 0.8125 + seed / 100,
                        "client_bytes_sent": 52_340.0,
                        "client_bytes_received": 1_234_000.0,
                        "seconds": 123.4,
                        "peak_rss_mb": 2048.4,
                    }
                )
    return rows


def test_bench_flaim_tables_fit() -> None:
    text = render_text(flaim_cli._tables(flaim_results(), 10))
    assert_whole(
        text,
        [
            "0.128 ± 0.000",
            "flaim-da",
            "aim-adaptive",
            "aug-private",
            "123.95 ± 0.50",
            "0.818 ± 0.005",
            "52.34 ± 0.00",
            "1234.00 ± 0.00",
            "123.4 ± 0.0",
            "2048",
        ],
    )
    assert "nan" not in text


def test_bench_flaim_default_methods_include_flaim_da() -> None:
    default = inspect.signature(flaim_cli.bench_cmd).parameters["methods"].default.default
    assert "flaim-da" in default and "aim" in default


def test_bench_flaim_through_the_cli_when_piped(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The real command (runs faked: the table is what is tested), output captured, not a TTY."""
    from fedsynth.flaim import data
    from fedsynth.flaim import runner as flaim_runner

    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.setattr(data, "load_flaim_data", lambda name, seed=0: SimpleNamespace(name=name))

    def fake_run(d: Any, method: str, *, epsilon: float, seed: int, **_: Any) -> Any:
        m = {"l1": 0.128, "nll": 12.5, "auc": 0.75 + seed / 1000, "peak_rss_mb": 300.0}
        return SimpleNamespace(
            metrics=m, client_bytes_sent=8000.0, client_bytes_received=1e6, seconds=1.5, rho_used=0.1, rho=0.1
        )

    monkeypatch.setattr(flaim_runner, "run", fake_run)
    r = runner.invoke(app, ["bench", "flaim", "--seeds", "2", "--epsilons", "1", "--secure-sum", "plain"])
    assert r.exit_code == 0, r.output
    assert_whole(r.output, ["flaim-da", "0.128 ± 0.000", "0.750 ± 0.001", "1000.00 ± 0.00"], fit=None)
    assert "flaim-sa" in r.output and "distaim" in r.output


# -- audit ---------------------------------------------------------------------------------------


def audit_report(fail: bool) -> AuditReport:
    dcr = DCRResult(0.612 if fail else 0.503, (0.46, 0.54), (0.48, 0.52), 10000, 0.012, 0.008)
    attacks = [
        AttackResult(
            name, 2000, 2000, 0.9 if fail else 0.51, (0.46, 0.54), 0.012, 0.001, 2.5 if fail else 0.0, [], []
        )
        for name in ("domias-knn", "domias-kde", "shadow-outliers")
    ]
    mem = MembershipAudit(2000, 2000, 2000, dcr, attacks)
    can = CanaryAudit(OneRunResult(1000, 100, 60, 50, 50, 0.12, 0.05), 1.0, 1e-5, "yes", 300, 3.0, "dp-vae/1")
    return AuditReport(None if fail else 1.0, 1e-5, 2000, 2000, mem, can, 3.0, [], "dp-vae/1")


@pytest.mark.parametrize("fail", [False, True])
def test_audit_table_fits(fail: bool) -> None:
    rep = audit_report(fail)
    text = render_text(rep.table())
    verdict = "FAIL" if fail else "pass"
    assert_whole(
        text,
        [
            "DCR share",
            "copies mem/non",
            "shadow-outliers",
            "canary 1-run",
            "2000+2000",
            "0.46–0.54",
            "1.2%/0.8%",
            "60/100",
            "m=1000",
            "0.012",
            "0.001",
            verdict,
        ],
    )
    assert text.count(verdict) >= 4
    assert ("none (non-private)" in text) == fail


def test_audit_failures_are_one_per_line() -> None:
    """What `fedsynth audit` prints after the table when it fails (captured like a log)."""
    rep = audit_report(fail=True)
    buf = io.StringIO()
    c = make_console(buf)
    for f in rep.failures():
        c.print(f"  - {f}", highlight=False)
    assert_whole(buf.getvalue(), rep.failures(), fit=PIPED_WIDTH)


# -- hub -----------------------------------------------------------------------------------------


def pool_screen() -> PoolScreen:
    src = "https://hub.example.org:8765#clinics/{silo}/3f9c2a7d-0d1e-4b5a-9c1e-7a1b2c3d4e5f"
    scores = [
        GeneratorScore(
            0,
            src.format(silo="hospital-a"),
            "yes",
            0.93,
            0.041,
            0.002,
            "color=mauve",
            0.052,
            1.2,
            "color",
            False,
            (),
        ),
        GeneratorScore(
            1,
            src.format(silo="hospital-b"),
            "no",
            0.12,
            0.387,
            0.123,
            "color=mauve & age=90",
            0.412,
            12.3,
            "age",
            True,
            (
                "label consistency 0.12 (pool median 0.93)",
                "12.3% excess rows with rare pattern color=mauve & age=90",
            ),
        ),
        GeneratorScore(
            2,
            "out/gens/no.safetensors",
            "no",
            math.nan,
            math.nan,
            math.nan,
            "",
            math.nan,
            math.nan,
            "",
            True,
            ("sampling raised RuntimeError: boom",),
        ),
    ]
    return PoolScreen(scores, kept=[object()], dropped=[object(), object()])


def test_hub_screen_table_fits_and_reasons_stay_whole() -> None:
    screen = pool_screen()
    text = render_text(screen_report(screen))
    assert_whole(
        text,
        [
            "pool screen: kept 1 of 3 generators",
            "hospital-a",
            "hospital-b",
            "gens",
            "0.93",
            "0.387",
            "12.3%",
            "0.412",
            "12.3",
            "keep",
            "DROP",
            "–",
        ],
        fit=None,
    )
    table_lines = text.split("#1 dropped")[0]
    assert_whole(table_lines, ["DROP"])  # the table itself fits 80 columns
    for r in ("label consistency 0.12 (pool median 0.93)", "sampling raised RuntimeError: boom"):
        assert r in text


def test_hub_screen_source_lines_are_not_wrapped_in_a_log(monkeypatch: pytest.MonkeyPatch) -> None:
    """What `fedsynth pull --screen-data` prints, to a console as built for a pipe."""
    monkeypatch.delenv("COLUMNS", raising=False)
    buf = io.StringIO()
    print_screen(pool_screen(), make_console(buf))
    text = buf.getvalue()
    assert_whole(text, [pool_screen().scores[1].source, "12.3% excess rows with rare pattern"], fit=None)
    assert_whole(text.split("#1 dropped")[0], ["hospital-b", "DROP", "keep"])


# -- the policy itself -------------------------------------------------------------------------------


def test_a_table_wider_than_the_console_overflows_instead_of_cutting() -> None:
    t = new_table("wide", ["method", ("value", "right"), "note"])
    t.add_row("flaim-da", "0.128 ± 0.000", "a long note that does not fit forty columns at all")
    text = render_text(t, width=40)
    assert_whole(
        text, ["flaim-da", "0.128 ± 0.000", "a long note that does not fit forty columns at all"], fit=None
    )


def test_piped_console_width(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    assert make_console(io.StringIO()).width == PIPED_WIDTH
    monkeypatch.setenv("COLUMNS", "132")
    assert make_console(io.StringIO()).width == 132


@pytest.mark.parametrize("command", ["demo", "bench"])
def test_sgde_commands_when_piped(command: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`fedsynth demo` / `fedsynth bench sgde` as run (experiment faked), output not a TTY."""
    monkeypatch.delenv("COLUMNS", raising=False)
    seeds = 1 if command == "demo" else 3
    monkeypatch.setattr(sgde_cli, "_run_sgde", lambda *a, **k: sgde_result(seeds=seeds))
    js = tmp_path / "r.json"
    args = ["demo", "--json", str(js)] if command == "demo" else ["bench", "sgde", "--json", str(js)]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    values = ["60.12 ± 0.95", "47.65 ± 14.91", "80.87"] if seeds > 1 else ["60.12", "100.00"]
    assert_whole(r.output, [*NAMES, *values], fit=None)
    for name in NAMES:  # the legend: one line per scenario
        assert any(line.startswith(name + "  ") for line in r.output.splitlines()), name
    assert js.with_suffix(".png").exists() == (command == "bench")  # bench sgde writes its PNG too
