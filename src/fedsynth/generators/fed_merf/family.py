"""The ``fed-merf/1`` family: DP-MERF (Harder, Adamczewski & Park, AISTATS 2021) across silos.

One class-conditional generator for the whole federation, fitted to noisy per-class mean
embeddings that the silos sum under secure aggregation, with the noise added once, distributed.

* **Public feature map** (:class:`~.features.FeatureMap`): x = TableEncoder(schema)(row) ∈
  [0, 1]^d; φ(x) = [√(1−a)·φ_J(x), √a·φ_M(x)] ∈ R^D' with φ_J DP-MERF's D random Fourier
  features of a Gaussian kernel of lengthscale ℓ on the whole row (frequencies from the spec's
  ``feature_seed``) and φ_M the feature map of the sum-over-columns kernel (one-hots, 1-D Fourier
  features of continuous columns), a = ``marginal_weight``; ‖φ(x)‖₂ = 1 exactly. a = 0 is plain
  DP-MERF; the sum kernel pins the class-conditional one-way marginals, which the joint
  features alone lose in the noise at a few hundred rows per class (screen in :data:`PRESETS`).
* **One client step** (round 1, step ``"embed"``): silo k sends
  ``emb`` = Σ_{i ∈ D_k} q_i + Z_k, with q_i = [round(γ·φ(x_i)) in class block y_i, g in count slot
  y_i] the per-record quantised contribution (C·D' + C integers) and Z_k ~ Sk(μ/t) per coordinate
  (an integer Skellam share), plus ``silos`` = [1]. Both go through the secure sum: the server
  only ever sees Σ_k emb_k = Σ_i q_i + Sk(k·μ/t) and the number k of contributing silos.
* **Server** (post-processing, :mod:`.train`): m̃_c = (s̃_c/γ)/max(ñ_c, 1) with ñ_c = ñ-slot/g,
  projected onto the unit ball (every true mean embedding lies in it), then G(z, c) is trained to
  minimise (1/C) Σ_c ‖mean_b φ(G(z_b, c)) − m̃_c‖² (DP-MERF's loss).
* **Artifact**: the generator's weights (float32 safetensors), the card with ``scope =
  "federation"``, ``class_label = None`` (``sample(n, condition=c)`` draws class c; without a
  condition the classes are uniform, :func:`~fedsynth.generators.base.class_codes`), the spec, and
  ``structure`` = {silos K, threshold t, noise_variance μ} — the public facts the claim rests on.

**Privacy argument.** Neighbouring datasets differ in one record of one silo. The server's only
access to the data is the secure sum, i.e. Q(D) + N with Q(D) = Σ_{records of the contributing
silos} q_i and N the sum of the contributing silos' Skellam shares. Q changes by exactly one q
when a record is added or removed; its L1 / L2 sensitivities Δ₁, Δ₂ are the per-record bounds of
:func:`~fedsynth.generators.fed_merf.features.sensitivity` (deterministic per-record rounding,
so the bound holds whatever the other records are). N is Sk(k·μ/t) per coordinate; k·μ/t ≥ μ,
and :func:`~fedsynth.privacy.skellam.skellam_rho_general` decreases in the variance, so the
release is ρ-zCDP with ρ = skellam_rho_general(μ, Δ₁, Δ₂), μ calibrated (bisection, rounded up)
so that ρ ≤ cdp_rho(ε, δ). The count k is data-independent (which silos deliver is not a
function of any record). Everything after the sum — the division, the projection, the training,
the weights and the samples — is post-processing. The claim states ρ for the *calibrated* μ, a
lower bound on the realised noise; it is written as the zcdp record of one equivalent Gaussian
measurement (measurements = 1, σ = 1/√(2ρ), no selections, accountant ``skellam-zcdp``) so that
``claim.recompute_rho()`` equals the Skellam ρ and any reader re-derives ε = cdp_eps(ρ, δ)
(``claim.verify()``); the loader also re-derives the Skellam ρ from the spec's Δ₁, Δ₂ and the
card's μ and refuses a card that claims less.

**Dropout rule.** Each of the K joined silos adds Sk(μ/t) with
t = max(min_silos, ⌈(1 − tolerated_dropout)·K⌉) (spec field ``tolerated_dropout``, default
0.1), so any surviving set of ≥ t silos carries variance ≥ μ. The secure sum is run with
threshold t (``FederationFit.min_survivors``: the in-process runner and the Flower app set SecAgg+'s
reconstruction threshold to it, and the runner refuses a caller's secure sum with a lower one), so
SecAgg+ refuses to unmask with fewer survivors: nothing is released and nothing is learned. The
server refuses a sum whose silo count is below t (nothing is trained or released), and
:func:`finish` checks that the silos in the released sums are those counted. The realised
variance k·μ/t is reported in :attr:`FederationFit.detail`. Trust: the server is honest but
curious and does not collude with silos; a coalition of the server with up to k − t silos still
faces ≥ t honest shares, i.e. variance ≥ μ. ``fit`` on one table is the same mechanism run
centrally (K = t = 1): the floor a federation run is compared with.

Mechanism noise comes from OS entropy unless ``FedMerfConfig.seeded_noise`` (tests, benchmarks).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from fedsynth.artifacts.card import ArtifactError, GeneratorCard
from fedsynth.artifacts.safetensors import Expected
from fedsynth.data.encoders import TableEncoder, encode_target
from fedsynth.data.schema import Schema, check_training_target, validate_frame
from fedsynth.flaim.measure import skellam_share
from fedsynth.flaim.methods.base import Plan
from fedsynth.generators.base import (
    FederationFit,
    FitReport,
    GeneratorSet,
    SpecError,
    TooFewRowsError,
    federation_delta,
    make_card,
)
from fedsynth.generators.fed_merf.features import (
    FeatureMap,
    class_sums,
    count_units,
    max_coordinate,
    sensitivity,
)
from fedsynth.generators.fed_merf.nets import MerfSpec, build_net, expected_tensors
from fedsynth.generators.fed_merf.train import TrainConfig, train_generator
from fedsynth.generators.torchnn import ConditionalNetGenerator, load_module_tensors, module_tensors
from fedsynth.privacy.claim import PrivacyClaim
from fedsynth.privacy.skellam import skellam_rho_general, skellam_variance
from fedsynth.privacy.target import PrivacyTarget
from fedsynth.privacy.zcdp import cdp_eps, cdp_rho

KIND = "fed-merf/1"
ACCOUNTANT = "skellam-zcdp"
#: ε is shaved by this relative amount so float round-off can never put the claim above the target
EPS_SHAVE = 1e-9
#: the secure sum's range adds this many σ of one Skellam share (as fed-pgm does)
NOISE_TAIL_SIGMAS = 40.0
#: relative slack when the loader re-derives the Skellam ρ of a card
RHO_RTOL = 1e-9


@dataclass(frozen=True)
class FedMerfConfig:
    """Spec parameters (public, on the card) plus the server's training choices (post-processing)."""

    features: int = 200
    lengthscale: float = 1.0
    gamma: float = 4096.0
    count_scale: float = 1.0
    feature_seed: int = 0
    latent: int = 16
    hidden: tuple[int, ...] = (128, 128)
    tolerated_dropout: float = 0.1
    marginal_weight: float = 0.5
    marginal_features: int = 16
    marginal_lengthscale: float = 0.1
    net: str = "merf-mlp"  # "merf-conv" for images
    conv_weight: float = 0.0
    conv_filters: int = 0
    steps: int = 1000
    batch_size: int = 256
    lr: float = 2e-3
    hard: bool = False  # soft one-hots in training (exact for the marginal block; screened better)
    tau: float = 1.0
    min_rows: int = 20  # central fit: below this a DP release is pointless
    seeded_noise: bool = False  # True: mechanism noise from ``seed`` (reproducible, NOT private)

    def spec(self) -> MerfSpec:
        return MerfSpec(
            features=self.features,
            lengthscale=self.lengthscale,
            gamma=self.gamma,
            count_scale=self.count_scale,
            feature_seed=self.feature_seed,
            latent=self.latent,
            hidden=tuple(self.hidden),
            tolerated_dropout=self.tolerated_dropout,
            marginal_weight=self.marginal_weight,
            marginal_features=self.marginal_features,
            marginal_lengthscale=self.marginal_lengthscale,
            kind=self.net,
            conv_weight=self.conv_weight,
            conv_filters=self.conv_filters,
        )

    def train(self) -> TrainConfig:
        return TrainConfig(
            steps=self.steps, batch_size=self.batch_size, lr=self.lr, hard=self.hard, tau=self.tau
        )


#: per-dataset presets. Screen (20 silos × 5 %, ε = 1, δ = 1e-5, 3 seeds, LR on 5,000
#: class-balanced samples, test AUC, mean): the defaults (D = 200, ℓ = 1, a = 0.5, soft one-hots,
#: 1,000 steps) give titanic 79.6, breast cancer 97.7, adult 84.3; D = 1000 / ℓ = 4 gives 77.9 /
#: 97.7 / 83.7, D = 500 / ℓ = 2 75.8 / 96.8 / 82.6; a = 0 (plain DP-MERF, D = 200) was noisier
#: (titanic 77.5, seeds 70-81; at D = 1000 some seeds inverted the class, AUC < 40); hidden
#: (256, 256), latent 4 or 2,000 steps × 512 moved adult by < 1. a = 1 (marginals only):
#: titanic 81.4, breast cancer 98.1, but adult 78.7-87 (the joint block is what ties its
#: columns together: real-data LR 90.5, marginals matched to TV ≤ 0.03, AUC 79 without it).
#: Images (MNIST, ε = 1.5 central, standalone screen, MLP on 15,000 samples, test accuracy):
#: RFF of raw pixels (D = 2,000, ℓ = 6) with the MLP generator 76.7 %, with the conv generator
#: 80.5 %, plus 32 random conv filters at b = 0.5 83.1 % (400 steps × 100 draws per class).
_IMAGE = {
    "net": "merf-conv",
    "hidden": (64,),
    "latent": 32,
    "features": 2000,
    "lengthscale": 6.0,
    "marginal_weight": 0.0,
    "conv_weight": 0.5,
    "conv_filters": 32,
    "steps": 400,
    "batch_size": 100,
}
PRESETS: dict[str, dict[str, Any]] = {
    "mnist": _IMAGE,
    "fashion_mnist": _IMAGE,
    "titanic": {"marginal_weight": 1.0},
    "breast_cancer": {"marginal_weight": 1.0},
    "breast_cancer_sklearn": {"marginal_weight": 1.0},
}


def layout_of(schema: Schema) -> tuple[tuple[str, int], ...]:
    return tuple((b.kind, b.width) for b in TableEncoder(schema).blocks)


def feature_map(spec: MerfSpec, schema: Schema) -> FeatureMap:
    """The public φ of (spec, schema): every silo and the server build the same one."""
    return FeatureMap(
        layout_of(schema),
        features=spec.features,
        lengthscale=spec.lengthscale,
        seed=spec.feature_seed,
        marginal_weight=spec.marginal_weight,
        marginal_features=spec.marginal_features,
        marginal_lengthscale=spec.marginal_lengthscale,
        conv_weight=spec.conv_weight,
        conv_filters=spec.conv_filters,
        image=schema.image,
    )


def threshold(silos: int, tolerated_dropout: float, min_silos: int) -> int:
    """t = max(min_silos, ⌈(1 − tolerated_dropout)·K⌉), at most K; t = 1 for a central run (K = 1).

    The product is rounded to 9 decimals first so 0.9·20 is 18, not ⌈18.000000000000004⌉."""
    if silos < 1:
        raise ValueError(f"a release needs at least one silo, got {silos}")
    if silos == 1:
        return 1
    need = math.ceil(round((1 - tolerated_dropout) * silos, 9))
    return min(silos, max(int(min_silos), need, 1))


@dataclass(frozen=True)
class Noise:
    """The public noise calibration of one release."""

    silos: int  # K, silos that joined
    threshold: int  # t
    variance: float  # μ, calibrated total variance per coordinate
    l1: float
    l2: float
    rho: float  # skellam_rho_general(μ, Δ₁, Δ₂)

    @property
    def share_variance(self) -> float:
        return self.variance / self.threshold


def calibrate(spec: MerfSpec, dim: int, epsilon: float, delta: float, silos: int, t: int) -> Noise:
    """μ for a ρ = cdp_rho(ε, δ) release of a D'-dimensional φ (ε shaved by :data:`EPS_SHAVE`)."""
    l1, l2 = sensitivity(dim, spec.gamma, spec.count_scale)
    mu = skellam_variance(cdp_rho(epsilon * (1 - EPS_SHAVE), delta), l1, l2)
    return Noise(silos, t, mu, l1, l2, skellam_rho_general(mu, l1, l2))


def claim_for(noise: Noise, delta: float) -> PrivacyClaim:
    """The zcdp claim of a release: one equivalent Gaussian measurement at σ = 1/√(2ρ_sk)."""
    claim = PrivacyClaim(
        mechanism="zcdp",
        epsilon=1.0,
        delta=delta,
        accountant=ACCOUNTANT,
        rho=1.0,
        sigma=1.0 / math.sqrt(2 * noise.rho),
        measurements=1,
        selections=0,
        selection_epsilon=0.0,
    )
    rho = max(claim.recompute_rho(), noise.rho)
    return replace(claim, rho=rho, epsilon=cdp_eps(rho, delta))


def structure_of(noise: Noise) -> dict[str, Any]:
    return {"silos": noise.silos, "threshold": noise.threshold, "noise_variance": noise.variance}


def check_structure(card: GeneratorCard, spec: MerfSpec, dim: int) -> None:
    """The card's noise facts are well formed and support its claim (the Skellam ρ of μ and the
    spec's sensitivities is at most the claimed ρ)."""
    st = card.structure
    if not isinstance(st, dict) or set(st) != {"silos", "threshold", "noise_variance"}:
        raise ArtifactError("a fed-merf card's structure must hold exactly silos, threshold, noise_variance")
    k, t, mu = st["silos"], st["threshold"], st["noise_variance"]
    if any(isinstance(v, bool) or not isinstance(v, int) for v in (k, t)) or not 1 <= t <= k <= 10**6:
        raise ArtifactError("fed-merf structure: silos and threshold must be integers with 1 <= t <= K")
    if t < threshold(k, spec.tolerated_dropout, 1):
        raise ArtifactError("fed-merf structure: the threshold is below the spec's dropout rule")
    if isinstance(mu, bool) or not isinstance(mu, int | float) or not (math.isfinite(mu) and mu > 0):
        raise ArtifactError("fed-merf structure: noise_variance must be a finite number > 0")
    claim = card.privacy
    if claim.mechanism != "zcdp" or claim.rho is None:
        raise ArtifactError("a fed-merf card carries a zcdp claim")
    l1, l2 = sensitivity(dim, spec.gamma, spec.count_scale)
    if skellam_rho_general(float(mu), l1, l2) > claim.rho * (1 + RHO_RTOL):
        raise ArtifactError("the card's noise variance does not support its claimed ρ")


# ----------------------------------------------------------------------------- the stepped method


@dataclass
class MerfState:
    done: bool = False
    total: np.ndarray | None = None  # the released noisy sum (int64, C·D' + C)
    silos: int = 0  # k, silos counted in the sum


class MerfMethod:
    """One step: every silo sends its noisy quantised class sums; the server keeps the sum."""

    name = "fed-merf"

    def __init__(
        self,
        spec: MerfSpec,
        n_classes: int,
        fmap: FeatureMap,
        noise: Noise,
        *,
        client_seed: int | None,
    ) -> None:
        self.spec = spec
        self.n_classes = n_classes
        self.noise = noise
        self.fmap = fmap
        self.gn = count_units(spec.gamma, spec.count_scale)
        self.client_seed = client_seed
        self.length = n_classes * fmap.dim + n_classes

    @property
    def threshold(self) -> int:
        """t: the fewest surviving silos whose noise shares add up to μ (the secure sum's threshold)."""
        return self.noise.threshold

    def init_state(self) -> MerfState:
        return MerfState()

    def upcoming_round(self, state: MerfState) -> int | None:
        return None if state.done else 1

    def plan(self, state: MerfState, participants: list[int]) -> Plan | None:
        if state.done:
            return None
        # σ = the std of one silo's noise share (sum_bound reads it)
        sig = math.sqrt(self.noise.share_variance)
        return Plan(1, "embed", sig, 0.0, 0.0, len(participants), senders=list(participants))

    def client_step(self, cid: int, codes: np.ndarray, plan: Plan) -> dict[str, np.ndarray]:
        """Silo side: Σ_i q_i over the silo's records + an Sk(μ/t) share per coordinate."""
        x, y = codes[:, :-1], codes[:, -1].astype(np.int64)
        vec = class_sums(x, y, self.fmap, self.n_classes, self.spec.gamma, self.gn)
        # a deployed silo draws its share from OS entropy: a server knowing the seed could subtract it
        rng = np.random.default_rng(None if self.client_seed is None else [self.client_seed, 1, cid])
        vec = vec + skellam_share(vec.shape, self.noise.share_variance, rng)
        return {"emb": vec.astype(np.int64), "silos": np.ones(1, dtype=np.int64)}

    def server_step(self, state: MerfState, plan: Plan, sums: dict[str, np.ndarray]) -> MerfState:
        k = int(np.asarray(sums["silos"]).reshape(-1)[0])
        if k < self.noise.threshold:
            # the sum holds less than the calibrated noise: drop it, release nothing
            raise ValueError(
                f"only {k} silos contributed; the calibrated noise needs at least t = "
                f"{self.noise.threshold} of the {self.noise.silos} (tolerated dropout "
                f"{self.spec.tolerated_dropout}): nothing is released"
            )
        total = np.asarray(sums["emb"], dtype=np.int64).reshape(-1)
        if total.shape != (self.length,):
            raise ValueError(f"the embedding sum has {total.size} entries, expected {self.length}")
        return MerfState(done=True, total=total, silos=k)

    def noisy_rows(self, state: MerfState) -> int:
        """Σ_c ñ_c: the release's estimate of the rows behind it (post-processing, local reports)."""
        assert state.total is not None
        return max(round(float(state.total[self.n_classes * self.fmap.dim :].sum()) / self.gn), 0)

    def targets(self, state: MerfState) -> np.ndarray:
        """m̃_c = (s̃_c/γ)/max(ñ_c, 1), projected onto the unit ball (post-processing)."""
        assert state.total is not None
        c, dim = self.n_classes, self.fmap.dim
        s = state.total[: c * dim].reshape(c, dim).astype(np.float64) / self.spec.gamma
        n = state.total[c * dim :].astype(np.float64) / self.gn
        m = s / np.maximum(n, 1.0)[:, None]
        norm = np.linalg.norm(m, axis=1, keepdims=True)
        return m / np.maximum(norm, 1.0)

    def detail(self, state: MerfState) -> dict[str, Any]:
        nz = self.noise
        return {
            "silos_joined": nz.silos,
            "threshold": nz.threshold,
            "silos_contributing": state.silos,
            "noise_variance": nz.variance,
            "share_variance": nz.share_variance,
            "realised_variance": state.silos * nz.share_variance,
            "sensitivity_l1": nz.l1,
            "sensitivity_l2": nz.l2,
            "rho": nz.rho,
        }


# ----------------------------------------------------------------------------- the generator


class FedMerfGenerator(ConditionalNetGenerator):
    """A released class-conditional MERF generator (draws every class of the schema)."""

    what = "fed-merf generator"


class FedMerfFamily:
    kind = KIND
    name = "fed-merf"
    scope = "federation"
    modality = "any"  # tables (TableEncoder rows) and images (pixel rows, conv features/generator)

    def default_config(self, dataset: str | None = None) -> FedMerfConfig:
        return FedMerfConfig(**PRESETS.get(dataset or "", {}))

    def spec_for(self, schema: Schema, config: Any = None) -> MerfSpec:
        spec = (config or FedMerfConfig()).spec()
        build_net(
            spec, layout_of(schema), len(schema.classes), schema.image
        )  # the encoded width fits the limits
        return spec

    def spec_from_dict(self, d: Any, schema: Schema) -> MerfSpec:
        spec = MerfSpec.from_dict(d)
        build_net(spec, layout_of(schema), len(schema.classes), schema.image)
        return spec

    def _checked(self, card: GeneratorCard, schema: Schema) -> MerfSpec:
        if card.class_label is not None:
            raise ArtifactError("a fed-merf generator is a joint model: its card's class_label must be null")
        try:
            spec = self.spec_from_dict(card.spec, schema)
        except SpecError as e:
            raise ArtifactError(f"invalid fed-merf spec: {e}") from None
        check_structure(card, spec, feature_map(spec, schema).dim)
        return spec

    def expected_tensors(self, card: GeneratorCard, schema: Schema) -> Expected:
        spec = self._checked(card, schema)
        shapes = expected_tensors(spec, layout_of(schema), len(schema.classes), schema.image)
        return {k: (shape, "F32") for k, shape in shapes.items()}

    def load(self, card: GeneratorCard, tensors: dict[str, np.ndarray], schema: Schema) -> FedMerfGenerator:
        spec = self._checked(card, schema)
        net = build_net(spec, layout_of(schema), len(schema.classes), schema.image)
        try:
            load_module_tensors(net, tensors)
        except RuntimeError as e:
            raise ArtifactError(f"tensors do not fit the fed-merf spec: {e}") from None
        return FedMerfGenerator(card, net, schema)

    # -- fitting ------------------------------------------------------------------------------
    def _setup(
        self, schema: Schema, target: PrivacyTarget, delta: float, silos: int, t: int, cfg: FedMerfConfig,
        spec: Any, seed: int,
    ) -> tuple[MerfSpec, MerfMethod, Callable[[pd.DataFrame], np.ndarray]]:  # fmt: skip
        sp = self.spec_from_dict((spec or cfg.spec()).to_dict(), schema)
        enc = TableEncoder(schema)
        fmap = feature_map(sp, schema)
        noise = calibrate(sp, fmap.dim, target.epsilon, delta, silos, t)
        method = MerfMethod(
            sp, len(schema.classes), fmap, noise, client_seed=seed if cfg.seeded_noise else None
        )

        def encode(df: pd.DataFrame) -> np.ndarray:
            data = validate_frame(df, schema)
            # one silo may hold a single class (label skew): its rows still count in the sums
            x = enc.transform(data, validated=True).astype(np.float64)
            y = encode_target(data[schema.target], schema).astype(np.float64)
            return np.column_stack([x, y])

        return sp, method, encode

    def _release(
        self, schema: Schema, sp: MerfSpec, method: MerfMethod, state: MerfState, target: PrivacyTarget,
        delta: float, cfg: FedMerfConfig, seed: int, source: str,
    ) -> GeneratorSet:  # fmt: skip
        claim = claim_for(method.noise, delta)
        if claim.epsilon > target.epsilon:
            raise RuntimeError(f"claim ε = {claim.epsilon} exceeds the target {target.epsilon}")
        net, rep = train_generator(method.targets(state), sp, method.fmap, cfg.train(), seed=seed)
        tensors = module_tensors(net)
        card = make_card(
            KIND, sp, schema, None, claim, tensors, structure=structure_of(method.noise), scope="federation"
        )
        gen = self.load(card, tensors, schema)  # what a reader loads, checks included
        gen.source = source
        fr = FitReport(None, method.noisy_rows(state), rep.seconds, claim, rep.final_loss, rep.losses)
        return GeneratorSet(schema, KIND, [gen], [fr])

    def fit(
        self,
        df: pd.DataFrame,
        schema: Schema,
        target: PrivacyTarget,
        config: Any = None,
        *,
        seed: int = 0,
        spec: Any = None,
        on_fit: Callable[[FitReport], None] | None = None,
        strict: bool = False,
    ) -> GeneratorSet:
        """The same mechanism run centrally on one table (K = t = 1: one party adds all the
        noise). ``strict`` is moot: there is one model."""
        cfg: FedMerfConfig = config or FedMerfConfig()
        t0 = time.perf_counter()
        data = validate_frame(df, schema)
        check_training_target(data, schema)
        n = len(data)
        if n < cfg.min_rows:
            raise TooFewRowsError(f"{n} rows are too few for a DP-MERF release (min {cfg.min_rows})")
        delta = target.delta_for(n)
        sp, method, encode = self._setup(schema, target, delta, 1, 1, cfg, spec, seed)
        plan = method.plan(method.init_state(), [0])
        assert plan is not None
        state = method.server_step(method.init_state(), plan, method.client_step(0, encode(data), plan))
        gset = self._release(schema, sp, method, state, target, delta, cfg, seed, "local")
        fr = replace(gset.reports[0], n_rows=n, seconds=time.perf_counter() - t0)
        gset.reports = [fr]
        if on_fit:
            on_fit(fr)
        return gset

    def federation_fit(
        self,
        schema: Schema,
        target: PrivacyTarget,
        silos: int,
        config: Any = None,
        *,
        seed: int = 0,
        spec: Any = None,
        min_silos: int = 2,
    ) -> FederationFit:
        delta = federation_delta(target, silos, min_silos)
        cfg: FedMerfConfig = config or FedMerfConfig()
        tol = (spec or cfg.spec()).tolerated_dropout
        t = threshold(silos, tol, max(2, min_silos))
        sp, method, encode = self._setup(schema, target, delta, silos, t, cfg, spec, seed)

        def finish(state: MerfState, contributors: list[int]) -> GeneratorSet:
            if not state.done:
                raise ValueError("the embedding step did not complete: nothing can be released")
            if len(contributors) != state.silos:
                raise RuntimeError(
                    f"{len(contributors)} silos are in the released sums but {state.silos} were counted"
                )
            if state.silos < t:
                raise ValueError(f"only {state.silos} silos contributed (need t = {t}): nothing is released")
            return self._release(schema, sp, method, state, target, delta, cfg, seed, "federation")

        def sum_bound(plan: Plan, max_client_rows: int) -> int:
            # |Σ_i q_i| per coordinate ≤ rows · max|q_i|; the silo's share adds a Skellam tail
            per_row = max_coordinate(sp.gamma, method.gn)
            return int(max_client_rows * per_row + math.ceil(NOISE_TAIL_SIGMAS * float(plan.sigma)) + 1)

        return FederationFit(method, encode, finish, sum_bound, method.detail, min_survivors=t)


FAMILY = FedMerfFamily()

__all__ = [
    "ACCOUNTANT",
    "FAMILY",
    "KIND",
    "PRESETS",
    "FedMerfConfig",
    "FedMerfFamily",
    "FedMerfGenerator",
    "MerfMethod",
    "MerfState",
    "Noise",
    "calibrate",
    "claim_for",
    "threshold",
]
