"""flaim-he: collected under HE, noise from the clients, only noisy values ever decrypted."""

from __future__ import annotations

import numpy as np
import pytest

from fedsynth.flaim.runner import run
from fedsynth.privacy import zcdp
from fedsynth.privacy.skellam import skellam_rho_general
from fedsynth.secagg.he_sum import HESum
from fedsynth.secagg.secure_sum import plain_sum
from tests.test_flaim_core import _toy

KW = dict(epsilon=2.0, clients=6, participation=0.5, rounds=3, split="iid", seed=1, workload="all-2way")


class RecordingHE(HESum):
    """Remembers every value the decryptor released, to check none is an exact sum."""

    def __init__(self, **kw) -> None:  # type: ignore[no-untyped-def]
        super().__init__(**kw)
        self.released: list[tuple[tuple[str, ...], np.ndarray, np.ndarray]] = []

    def release(self, keys, cells):  # type: ignore[no-untyped-def]
        out = super().release(keys, cells)
        self.released.append((tuple(keys), np.asarray(cells), out))
        return out


def test_the_ledger_adds_up_to_rho_and_every_release_carries_noise() -> None:
    d = _toy()
    he = RecordingHE()
    r = run(d, "flaim-he", secure_sum=he, **KW)  # type: ignore[arg-type]
    rho = zcdp.cdp_rho(2.0, 1e-5)
    assert r.rho == pytest.approx(rho) and r.rho_used == pytest.approx(rho, rel=1e-6)
    assert r.metrics["l1"] < 0.6
    # every release added a noise copy to the answers, and no release equals the exact counts
    assert he.released and all(
        set(k) in ({"answers", "noise_preview"}, {"answers", "noise_measure"}) for k, *_ in he.released
    )
    released = list(he.released)
    exact = HESum.release(he, ("answers",), np.arange(he._totals["answers"].size))  # the test's oracle
    diffs = [np.abs(out - exact[cells]).sum() for _, cells, out in released]
    assert all(x > 0 for x in diffs)
    # the preview is released once, each measured marginal once
    previews = [c for k, c, _ in released if "noise_preview" in k]
    assert len(previews) == 1
    measured = [tuple(c) for k, c, _ in released if "noise_measure" in k]
    assert len(measured) == len(set(measured))


def test_charged_rho_matches_the_skellam_bounds() -> None:
    from fedsynth.flaim.methods import Context, make_method
    from fedsynth.flaim.workload import all_kway

    d = _toy()
    sizes = d.domain.sizes
    ctx = Context(sizes, all_kway(list(sizes), 2), 1.0, 1e-5, 4, 0.5)
    m = make_method("flaim-he", ctx)
    k = len(m.pool)  # type: ignore[attr-defined]
    rho = zcdp.cdp_rho(1.0, 1e-5)
    assert skellam_rho_general(m.mu_preview, k, np.sqrt(k)) <= (1 - ctx.alpha) * rho * (1 + 1e-9)  # type: ignore[attr-defined]
    n_meas = len(sizes) + ctx.rounds
    assert n_meas * skellam_rho_general(m.mu_measure, 1, 1) <= ctx.alpha * rho * (1 + 1e-9)  # type: ignore[attr-defined]


def test_refused_without_encrypted_totals() -> None:
    with pytest.raises(ValueError, match="--secure-sum he"):
        run(_toy(), "flaim-he", secure_sum=plain_sum, **KW)  # type: ignore[arg-type]


def test_a_noise_client_lost_before_uploading_is_made_up_by_the_next_round() -> None:
    d = _toy()
    # client 0 never uploads anything: its noise share is missing and asked of later participants
    he = RecordingHE(drop_before_upload={0})
    r = run(d, "flaim-he", secure_sum=he, **KW)  # type: ignore[arg-type]
    assert r.rho_used <= r.rho * (1 + 1e-9)
    assert r.participants >= 2


def test_a_reused_secure_sum_never_adds_one_runs_totals_to_the_next() -> None:
    d = _toy()
    shared = HESum()
    first = run(d, "flaim-he", secure_sum=shared, **KW)  # type: ignore[arg-type]
    again = run(d, "flaim-he", secure_sum=shared, **KW)  # type: ignore[arg-type]
    fresh = run(d, "flaim-he", secure_sum=HESum(), **KW)  # type: ignore[arg-type]
    assert np.array_equal(again.synthetic, fresh.synthetic) and np.array_equal(
        first.synthetic, fresh.synthetic
    )
