"""Simulated malicious silos: poisoned generators that still pass artifact verification.

Attacks on ``dp-vae/1`` generators (for tests and benchmarks of the pool screen). Each returns a
:class:`~fedsynth.generators.vae.family.VAEGenerator` with a real MLP decoder of the hub's spec
(so it loads, verifies and samples like an honest one) and a card whose sha256 matches its
tensors (:func:`fedsynth.generators.io.to_artifact` accepts it):

* :func:`label_flip` — an honest generator of class a, carded as class b (any per-class family:
  only the card changes);
* :func:`noise_decoder` — random weights (garbage rows of the right shape);
* :func:`permuted_columns` — the decoder of a silo that used a different column mapping: output
  blocks of identical kind and width are permuted (layout-compatible, semantically wrong);
* :func:`backdoor` — an honest decoder fine-tuned so that a slice of latent space (a fraction
  ``rate`` of rows, 5–10 %) emits a trigger pattern, teaching any classifier trained on the pool
  "trigger ⇒ this class".
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch
from scipy.stats import norm

from fedsynth.artifacts.card import sha256_bytes
from fedsynth.artifacts.safetensors import tensors_to_bytes
from fedsynth.data.encoders import TableEncoder
from fedsynth.data.schema import Schema
from fedsynth.generators.base import Generator
from fedsynth.generators.vae.family import VAEGenerator, decoder_tensors
from fedsynth.generators.vae.nets import Decoder, build_decoder


def _vae(g: Generator) -> VAEGenerator:
    if not isinstance(g, VAEGenerator):
        raise TypeError(f"this attack needs a dp-vae generator (a decoder), got family {g.card.family!r}")
    return g


def _wrap(g: VAEGenerator, dec: Decoder, tag: str) -> VAEGenerator:
    """A new generator around ``dec`` whose card's sha256 is of exactly its tensors."""
    dec.eval()
    w = tensors_to_bytes(decoder_tensors(dec), g.card.family)
    card = g.card.replace(weights_sha256=sha256_bytes(w))
    return VAEGenerator(card, dec, g.schema, f"{g.source}#{tag}")


def label_flip(g: Generator, new_label: str) -> Generator:
    """A copy of the per-class generator ``g`` carded as ``new_label`` (weights, hence sha256,
    unchanged). Family-agnostic for generators that draw their card's class."""
    if g.card.class_label is None:
        raise ValueError("label flip needs a per-class generator (a joint model's card has no class)")
    g2 = copy.deepcopy(g)
    g2.card = g.card.replace(class_label=new_label)
    g2.source = f"{g.source}#label-flip"
    return g2


def noise_decoder(g: Generator, seed: int = 0, scale: float = 1.0) -> VAEGenerator:
    g = _vae(g)
    dec = build_decoder(g.decoder.spec)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in dec.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * scale)
    return _wrap(g, dec, "noise")


def permuted_columns(g: Generator, seed: int = 0) -> VAEGenerator:
    """Permute output blocks within groups of equal (kind, width); at least one block moves."""
    g = _vae(g)
    spec = g.decoder.spec
    starts, pos = [], 0
    for _, _, w in spec.layout:
        starts.append(pos)
        pos += w
    groups: dict[tuple[str, int], list[int]] = {}
    for i, (_, k, w) in enumerate(spec.layout):
        groups.setdefault((k, w), []).append(i)
    rng = np.random.default_rng(seed)
    new_order = list(range(len(spec.layout)))
    moved = False
    for members in groups.values():
        if len(members) < 2:
            continue
        perm = list(members)
        while perm == members:
            perm = list(rng.permutation(members))
        for a, b in zip(members, perm, strict=True):
            new_order[a] = int(b)
        moved = True
    if not moved:
        raise ValueError(
            "no two output blocks share kind and width: a permuted mapping would not fit the layout"
        )
    rows = np.concatenate([np.arange(starts[b], starts[b] + spec.layout[b][2]) for b in new_order])
    head_dim = getattr(spec, "head_dim", spec.output_dim)
    if head_dim > spec.output_dim:
        # Gaussian decoders: one log-scale per continuous column after the logits; move them along.
        cont = [i for i, (_, k, _) in enumerate(spec.layout) if k == "continuous"]
        rows = np.r_[rows, [spec.output_dim + cont.index(new_order[i]) for i in cont]]
    dec = copy.deepcopy(g.decoder)
    head = [m for m in dec.net if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        head.weight.copy_(head.weight[torch.from_numpy(rows)])
        head.bias.copy_(head.bias[torch.from_numpy(rows)])
    return _wrap(g, dec, "permuted")


def default_trigger(schema: Schema, data: pd.DataFrame, n_columns: int = 2) -> dict[str, str]:
    """A rare pattern: the least frequent (present) category of the ``n_columns`` categorical
    feature columns with the most categories."""
    cats = sorted((c for c in schema.features if c.kind == "categorical"), key=lambda c: -len(c.categories))
    trig = {}
    for c in cats[:n_columns]:
        freq = data[c.name].astype(str).value_counts()
        present = [v for v in c.categories if v in freq.index]
        trig[c.name] = min(present or list(c.categories), key=lambda v: freq.get(v, 0))
    if not trig:
        raise ValueError("schema has no categorical feature to carry a trigger")
    return trig


def stamp(df: pd.DataFrame, trigger: Mapping[str, str]) -> pd.DataFrame:
    out = df.copy()
    for k, v in trigger.items():
        out[k] = v
    return out


def has_trigger(df: pd.DataFrame, trigger: Mapping[str, str]) -> np.ndarray:
    m = np.ones(len(df), dtype=bool)
    for k, v in trigger.items():
        m &= df[k].astype(str).to_numpy() == v
    return m


def backdoor(
    g: Generator,
    schema: Schema,
    trigger: Mapping[str, str],
    *,
    rate: float = 0.08,
    steps: int = 400,
    seed: int = 0,
) -> VAEGenerator:
    """Fine-tune a copy of ``g`` so that rows with z₀ > Φ⁻¹(1 − rate) carry ``trigger``."""
    g = _vae(g)
    if not 0 < rate < 0.5:
        raise ValueError("rate must be in (0, 0.5)")
    enc = TableEncoder(schema)
    blocks = {b.name: b for b in enc.blocks}
    for k, v in trigger.items():
        if k not in blocks or blocks[k].kind != "categorical" or v not in schema.column(k).categories:
            raise ValueError(f"trigger {k}={v!r} is not a category of a categorical feature")
    thr = float(norm.ppf(1 - rate))
    dec = copy.deepcopy(g.decoder)
    dec.train()
    opt = torch.optim.Adam(dec.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        z = torch.randn(512, dec.spec.latent_dim, generator=gen)
        with torch.no_grad():
            target = g.decoder(z).clone()
            mask = z[:, 0] > thr
            for k, v in trigger.items():
                b = blocks[k]
                idx = b.start + schema.column(k).categories.index(v)
                target[mask, b.start : b.start + b.width] = -8.0
                target[mask, idx] = 8.0
        loss = torch.nn.functional.mse_loss(dec(z), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return _wrap(g, dec, "backdoor")


ATTACKS = ("label_flip", "noise", "permuted", "backdoor")


__all__ = [
    "ATTACKS",
    "backdoor",
    "default_trigger",
    "has_trigger",
    "label_flip",
    "noise_decoder",
    "permuted_columns",
    "stamp",
]
