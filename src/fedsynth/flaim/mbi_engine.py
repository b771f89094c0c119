"""The JAX side of Private-PGM, imported only when asked for: mbi's MirrorDescent and its model.

``import mbi`` imports JAX (≈ 150 MB resident, ≈ 1 s), so :mod:`fedsynth.flaim.model` touches
this module only for ``engine="mbi"`` and for :attr:`~fedsynth.flaim.model.PGM.model` (interop).
JAX runs in float64 (mbi's advice for N > 100K) without its on-disk compilation cache (mbi emits
many small programs; the cache only adds I/O).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_enable_compilation_cache", False)

import jax.numpy as jnp  # noqa: E402
import mbi  # noqa: E402
import numpy as np  # noqa: E402

if TYPE_CHECKING:  # pragma: no cover
    from fedsynth.flaim.model import PGM, Clique, Measurement


def to_markov_random_field(model: PGM) -> mbi.MarkovRandomField:
    """``model`` as an :class:`mbi.MarkovRandomField` (same potentials and clique marginals)."""
    dom = mbi.Domain.fromdict(model.sizes)
    pots = mbi.CliqueVector(
        dom,
        model.cliques,
        {c: mbi.Factor(dom.project(c), jnp.asarray(v)) for c, v in model.potentials.items()},
    )
    counts = {c: jnp.asarray(model.total * model.probability(c)) for c in model.cliques}
    factors = {c: mbi.Factor(dom.project(c), v) for c, v in counts.items()}
    margs = mbi.CliqueVector(dom, model.cliques, factors)
    return mbi.MarkovRandomField(potentials=pots, marginals=margs, total=model.total)


def fit_mirror_descent(
    sizes: dict[str, int], measurements: list[Measurement], total: float, iters: int, warm: PGM | None
) -> dict[Clique, np.ndarray]:
    """Potentials fitted by :class:`mbi.estimation.MirrorDescent` (JAX), warm-started."""
    dom = mbi.Domain.fromdict(sizes)
    ms = [
        mbi.LinearMeasurement(np.asarray(m.y, dtype=np.float64), tuple(m.clique), stddev=float(m.sigma))
        for m in measurements
    ]
    fitted = mbi.estimation.MirrorDescent().estimate(
        dom,
        ms,
        known_total=float(total),
        iters=iters,
        warm_start=to_markov_random_field(warm) if warm is not None else None,
    )
    return {tuple(c): np.asarray(fitted.potentials[c].values) for c in fitted.cliques}
