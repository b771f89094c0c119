"""Run the FLAIM authors' central AIM (Samuel-Maddock/flaim @ 3e698da) on arrays we hand it.

Runs under the reference's own interpreter (``/work/refenv/bin/python``, see
``bench/bench_aim_reference.py`` for the setup) and imports only that environment's packages: it does
not import ``fedsynth``. No reference code is copied here; the reference checkout is imported from
the path given with ``--reference``::

    /work/refenv/bin/python bench/aim_reference_driver.py --reference /work/flaim-ref \
        --inputs DIR --out synth.npy --seed 0 [--epsilon 1 --delta 1e-5 --rounds 10 --alpha 0.9]

``DIR`` holds ``train.npy`` (int64 codes, rows x attributes), ``domain.json``
(``{"attrs": [...], "sizes": {attr: size}}``, optionally ``"target"``) and ``workload.json`` (a list
of cliques, each a list of attribute names). The synthetic rows (as many as training rows) are
written to ``--out`` as int64 in the attribute order of ``domain.json``, and one JSON line
``{"fit_sample_s": ..., "peak_rss_mb": ...}`` is printed on stdout.

What is run
-----------
``synth_fl.generators.central.aim.AIM.generate(dataset, workload)``, the class the reference's
experiment task (``synth_fl/simulation/experiment_tasks/fl_stats.py``) builds for ``generator=aim``,
with a ``FederatedGeneratorConfig`` made by ``dacite.from_dict`` as that task does. The settings are
the paper's central-AIM ones (``sweep_configs/paper/varying_{eps,t,p,feature_skew}.json``, which list
``aim``; ``baselines.json`` only has ``flaim`` baselines and the same PGM settings):

* ``global_rounds = --rounds`` (fixed T, so no adaptive annealing), ``gauss_budget_alloc = --alpha``,
  ``accountant_type = "zcdp"``, ``aim_mech = "gaussian"``, ``selection_method = "exp"``;
* ``pgm_train_iters = 50``, ``pgm_final_iters = 500`` (the sweeps' values; ``GeneratorConfig``'s
  defaults are 30/25), ``backend_model = "pgm"`` (the vendored numpy Private-PGM,
  ``synth_fl/libs/private_pgm/mbi``), ``pgm_weight_method = "sigma"``,
  ``normalize_measurements = True`` (every paper sweep sets it);
* the model-size cap is the reference's hard-coded ``MAX_MODEL_SIZE = 80`` (MB), scaled by the
  budget spent, in ``AIM._get_size_limit``;
* the answer cache (``load_client_answer_cache``, default ``True``) is switched off so that no
  cached answers from an earlier run can be picked up.

The workload is not injected: ``AIM.generate`` takes the workload as an argument (the reference's
``WorkloadManager`` only draws the list and passes it in), so ours is passed as a list of tuples,
each ordered by the domain's attribute order as the reference's own ``itertools.combinations`` of
the columns would be. ``generator.synth_rows`` is set to the number of training rows, and
``graphical_model.synthetic_data`` (the reference's sampler) draws them.

Seeding: the reference's mechanisms use ``np.random`` (``prng=np.random``), its sampler calls
``np.random.choice``/``shuffle``, and the federated base class uses ``random``; both global RNGs are
seeded with ``--seed``. The reference also iterates over Python sets of attribute-name tuples (the
workload's downward closure, hence the order of the exponential mechanism's candidates, and the
sampler's column groups), so its output depends on string hashing: unless ``PYTHONHASHSEED`` already
equals the seed, the driver re-executes itself with ``PYTHONHASHSEED=--seed`` (the benchmark sets it
for its children, so no re-exec happens there). With that, a seed reproduces the same rows.
``fit_sample_s`` covers building the reference's dataset and AIM objects,
``generate`` (answers, T rounds, final 500-iteration estimate) and sampling.

Work-arounds (the reference at 3e698da does not import as shipped)
-------------------------------------------------------------------
1. ``synth_fl/generators/central/__init__.py`` imports ``ctgan.py``, which imports modules that are
   not in the repository (``synth_fl.libs.ctgan``, ``synth_fl.libs.snsynth``, ``sweeper.utils``) and a
   name that does not exist (``FederatedDLConfig``), so ``import synth_fl.generators.central.aim``
   fails. The driver registers a bare package object for ``synth_fl.generators.central`` (its
   ``__path__`` pointing at the real folder) so that only ``aim.py`` is loaded.
2. ``aim.py`` does ``from synth_fl.utils import DEFAULT_DATA_ROOT``, a name ``synth_fl/utils/__init__.py``
   no longer defines (it moved to ``path_manager.DEFAULT_DATA_ROOT``). The driver sets
   ``synth_fl.utils.DEFAULT_DATA_ROOT`` (and ``path_manager``'s) to an empty temporary folder before
   the import. It is only used for the answer-cache file name.
3. ``synth_fl/utils/dataloaders/core.py`` uses ``path_manager`` without importing it (a ``NameError``
   at class definition). The driver executes the real ``core.py`` with ``path_manager`` placed in its
   module namespace beforehand (``importlib`` spec + ``exec_module``).
4. ``AIM.__init__`` reads ``config.accountant_type``, which only ``FederatedGeneratorConfig`` has, so
   that config class is used (as the reference's own experiment task does).

Stand-in modules (never called on the central-AIM path)
-------------------------------------------------------
The import chain pulls in packages the central AIM never calls: ``torch``, ``pmlb`` and ``sdv``
(``dataloaders/core.py``: loaders for other datasets and torch datasets), ``jax`` (imported but unused
in ``synth_fl/generators/__init__.py``; used only by ``mbi/mixture_inference.py``, not by
``FactoredInference``) and ``sklearn`` (``synth_fl/utils/__init__.py``'s GBDT evaluation helper and
``sharders.py``'s KMeans client split). Instead of installing them, the driver puts stand-in modules
into ``sys.modules`` before importing the reference; any attribute of a stand-in is a callable
that raises ``RuntimeError`` if it is ever called, so a run that needed one would fail loudly
rather than silently differ. The packages that are really used (numpy, pandas, scipy, networkx,
autodp, loguru, disjoint_set, dacite) come from the reference environment.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

import numpy as np

# Modules imported (but never called) on the reference's central-AIM import chain.
STUBBED_MODULES: tuple[str, ...] = (
    "torch",
    "torch.utils",
    "torch.utils.data",
    "pmlb",
    "pmlb.update_dataset_files",
    "sdv",
    "sdv.datasets",
    "sdv.datasets.demo",
    "jax",
    "jax.numpy",
    "jax.nn",
    "sklearn",
    "sklearn.dummy",
    "sklearn.metrics",
    "sklearn.cluster",
)

# The paper's central-AIM PGM settings (sweep_configs/paper/varying_*.json).
PAPER_PGM_TRAIN_ITERS = 50
PAPER_PGM_FINAL_ITERS = 500


class _StandIn:
    """Placeholder for a class or function of a stubbed package; fails if used."""

    def __init__(self, qualname: str) -> None:
        self._qualname = qualname

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(
            f"{self._qualname} is a stand-in (the central-AIM benchmark environment does not install "
            "it); the reference code path being benchmarked was not expected to call it"
        )

    def __mro_entries__(self, bases: tuple[Any, ...]) -> tuple[type, ...]:
        return (object,)  # lets `class X(torch.utils.data.Dataset)` still be defined


def vm_hwm_mb() -> float:
    """Peak resident set of this process's address space (VmHWM). Unlike ``ru_maxrss``, which a
    child inherits from its parent's memory at fork, it starts afresh at exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _stand_in_getattr(module: str) -> Any:
    def __getattr__(attr: str) -> _StandIn:
        if attr.startswith("__"):  # keep dunder probes (__file__, __version__, ...) honest
            raise AttributeError(attr)
        return _StandIn(f"{module}.{attr}")

    return __getattr__


def _install_stand_ins() -> None:
    for name in STUBBED_MODULES:
        mod = types.ModuleType(name)
        mod.__dict__["__getattr__"] = _stand_in_getattr(name)
        mod.__dict__["__path__"] = []  # a package, so its submodules can be registered
        sys.modules[name] = mod
    for name in STUBBED_MODULES:
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, sys.modules[name])
    # isinstance(x, torch.utils.data.Dataset) needs a real class.
    sys.modules["torch.utils.data"].__dict__["Dataset"] = type("Dataset", (), {})


def import_reference(reference: Path, data_root: Path) -> tuple[Any, Any, Any]:
    """Import the reference's central AIM; returns (AIM, FederatedGeneratorConfig, TabularDataset)."""
    pkg_root = reference / "synth_fl"
    if not (pkg_root / "generators" / "central" / "aim.py").is_file():
        raise SystemExit(f"{reference} does not look like a Samuel-Maddock/flaim checkout")
    _install_stand_ins()
    sys.path.insert(0, str(reference))

    import synth_fl.utils as sf_utils

    # Work-around 2: aim.py imports a name the package no longer defines.
    sf_utils.__dict__["DEFAULT_DATA_ROOT"] = str(data_root)
    sf_utils.path_manager.set_data_path(str(data_root))
    sf_utils.logger.remove()  # quiet the reference's DEBUG-level stderr logging
    sf_utils.logger.add(sys.stderr, level="WARNING")

    # Work-around 3: core.py uses path_manager without importing it.
    core_name = "synth_fl.utils.dataloaders.core"
    spec = importlib.util.spec_from_file_location(core_name, pkg_root / "utils" / "dataloaders" / "core.py")
    assert spec is not None and spec.loader is not None
    core = importlib.util.module_from_spec(spec)
    core.__dict__["path_manager"] = sf_utils.path_manager
    sys.modules[core_name] = core
    spec.loader.exec_module(core)

    import synth_fl.generators as sf_generators

    # Work-around 1: skip synth_fl/generators/central/__init__.py (its ctgan import is broken).
    central_name = "synth_fl.generators.central"
    central = types.ModuleType(central_name)
    central.__path__ = [str(pkg_root / "generators" / "central")]
    sys.modules[central_name] = central
    sf_generators.__dict__["central"] = central

    from synth_fl.generators.central.aim import AIM

    return AIM, sf_generators.FederatedGeneratorConfig, core.TabularDataset


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", type=Path, required=True, help="Samuel-Maddock/flaim checkout")
    ap.add_argument(
        "--inputs", type=Path, required=True, help="folder with train.npy, domain.json, workload.json"
    )
    ap.add_argument("--out", type=Path, required=True, help="where to write the synthetic int64 .npy")
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--epsilon", type=float, default=1.0)
    ap.add_argument("--delta", type=float, default=1e-5)
    ap.add_argument("--rounds", type=int, default=10, help="fixed number T of AIM rounds")
    ap.add_argument("--alpha", type=float, default=0.9, help="share of rho for the Gaussian measurements")
    ap.add_argument("--pgm-train-iters", type=int, default=PAPER_PGM_TRAIN_ITERS)
    ap.add_argument("--pgm-final-iters", type=int, default=PAPER_PGM_FINAL_ITERS)
    args = ap.parse_args(argv)

    # The reference iterates over sets of attribute-name tuples (its downward closure, the sampler's
    # column groups), so its result depends on str hashing: pin the hash seed to --seed too.
    hash_seed = str(args.seed % 2**32)
    if os.environ.get("PYTHONHASHSEED") != hash_seed:
        script_args = sys.argv[1:] if argv is None else argv
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        os.execve(sys.executable, [sys.executable, str(Path(__file__).resolve()), *script_args], env)

    train = np.load(args.inputs / "train.npy")
    dom = json.loads((args.inputs / "domain.json").read_text())
    attrs: list[str] = list(dom["attrs"])
    sizes: dict[str, int] = {a: int(dom["sizes"][a]) for a in attrs}
    target: str | None = dom.get("target")
    pos = {a: i for i, a in enumerate(attrs)}
    workload = [
        tuple(sorted(cl, key=pos.__getitem__))
        for cl in json.loads((args.inputs / "workload.json").read_text())
    ]
    if train.ndim != 2 or train.shape[1] != len(attrs):
        raise SystemExit(f"train.npy has shape {train.shape}, expected (rows, {len(attrs)})")

    with tempfile.TemporaryDirectory(prefix="flaim-ref-data-") as data_root:
        AIM, FederatedGeneratorConfig, TabularDataset = import_reference(
            args.reference.resolve(), Path(data_root)
        )
        import dacite
        import pandas as pd

        random.seed(args.seed)
        np.random.seed(args.seed)

        t0 = time.perf_counter()
        df = pd.DataFrame(train.astype(np.int64), columns=attrs)
        dataset = TabularDataset(
            "fedsynth-bench", df=df, domain=dict(sizes), y=target, random_state=args.seed, non_iid=""
        )
        config = dacite.from_dict(
            data_class=FederatedGeneratorConfig,
            data={
                "epsilon": args.epsilon,
                "delta": args.delta,
                "seed": args.seed,
                "aim_mech": "gaussian",
                "backend_model": "pgm",
                "accountant_type": "zcdp",
                "global_rounds": args.rounds,
                "gauss_budget_alloc": args.alpha,
                "selection_method": "exp",
                "pgm_train_iters": args.pgm_train_iters,
                "pgm_final_iters": args.pgm_final_iters,
                "pgm_weight_method": "sigma",
                "normalize_measurements": True,
                "anneal_type": "one",
                "workload_type": "uniform",
                "workload_num_marginals": len(workload),
                "load_client_answer_cache": False,
                "save_client_answer_cache": False,
                "num_clients": 1,
                "clients_per_round": 1,
            },
        )
        generator = AIM(config)
        generator.synth_rows = len(train)
        synth = generator.generate(dataset, workload)
        out = synth.df.loc[:, attrs].to_numpy(dtype=np.int64)
        fit_sample_s = time.perf_counter() - t0

    if out.shape != train.shape:
        raise SystemExit(f"reference returned {out.shape}, expected {train.shape}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.save(args.out, out)
    peak_rss_mb = vm_hwm_mb()
    rounds_run = generator.internal_metrics.get("actual_rounds")
    print(
        json.dumps({"fit_sample_s": fit_sample_s, "peak_rss_mb": peak_rss_mb, "rounds": rounds_run}),
        flush=True,
    )


if __name__ == "__main__":
    main()
