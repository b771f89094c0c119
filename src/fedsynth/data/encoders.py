"""Mixed-type table encoding for neural generators.

The encoding is a pure function of the (public) schema, so a decoder trained at one silo decodes
identically everywhere:

* categorical column with K categories -> K one-hot slots (decoder emits logits; softmax);
* continuous column in [lo, hi] -> one slot x' = (x - lo) / (hi - lo) in [0, 1] (decoder emits a
  logit; sigmoid). Integer columns are rounded on decode.

The layout (``blocks``) is part of the decoder spec that the hub fixes; :meth:`TableEncoder.layout`
is what goes into a generator card.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fedsynth.data.schema import Schema, validate_frame

if TYPE_CHECKING:  # pragma: no cover - imported where frames are built (the hub at rest: never)
    import pandas as pd


@dataclass(frozen=True)
class Block:
    name: str
    kind: str  # "categorical" | "continuous"
    start: int
    width: int


class TableEncoder:
    """Encode the feature columns of ``schema`` (the target is handled per class, not encoded)."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        blocks: list[Block] = []
        pos = 0
        for c in schema.features:
            w = len(c.categories) if c.kind == "categorical" else 1
            blocks.append(Block(c.name, c.kind, pos, w))
            pos += w
        self.blocks: tuple[Block, ...] = tuple(blocks)
        self.dim = pos

    def layout(self) -> list[dict[str, object]]:
        return [{"name": b.name, "kind": b.kind, "width": b.width} for b in self.blocks]

    def layout_tuples(self) -> list[tuple[str, str, int]]:
        """The layout as ``(name, kind, width)`` tuples (how the families' specs hold it)."""
        return [(b.name, b.kind, b.width) for b in self.blocks]

    def transform(self, df: pd.DataFrame, *, validated: bool = False) -> np.ndarray:
        """Table -> float32 matrix of shape (n, dim)."""
        import pandas as pd

        if not validated:
            df = validate_frame(df, self.schema, require_target=False)
        if self.schema.image is not None:  # every slot a pixel in [0, 255]: one vectorised scale
            return (df[[b.name for b in self.blocks]].to_numpy(dtype=np.float32) / 255.0).astype(np.float32)
        out = np.zeros((len(df), self.dim), dtype=np.float32)
        for b, c in zip(self.blocks, self.schema.features, strict=True):
            if c.kind == "categorical":
                idx = pd.Categorical(df[c.name], categories=list(c.categories)).codes
                out[np.arange(len(df)), b.start + idx] = 1.0
            else:
                span = (c.upper - c.lower) or 1.0  # type: ignore[operator]
                out[:, b.start] = (df[c.name].to_numpy(dtype=float) - c.lower) / span
        return out

    def inverse_transform(
        self, x: np.ndarray, *, rng: np.random.Generator | None = None, sample_categories: bool = True
    ) -> pd.DataFrame:
        """Decoder output (probabilities / unit-interval values) -> table.

        ``x`` holds softmax probabilities in categorical blocks and [0, 1] values in continuous
        blocks. Categories are drawn from the probabilities (``sample_categories``) or argmax'd.
        """
        import pandas as pd

        rng = rng or np.random.default_rng()
        if self.schema.image is not None:  # pixels: round(255·x) as uint8, one vectorised step
            px = np.rint(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)
            return pd.DataFrame(px, columns=[b.name for b in self.blocks])
        cols: dict[str, object] = {}
        for b, c in zip(self.blocks, self.schema.features, strict=True):
            seg = x[:, b.start : b.start + b.width]
            if c.kind == "categorical":
                if sample_categories:
                    p = np.clip(seg, 0, None)
                    p = p / np.maximum(p.sum(axis=1, keepdims=True), 1e-12)
                    u = rng.random((len(p), 1))
                    idx = np.minimum((p.cumsum(axis=1) < u).sum(axis=1), b.width - 1)
                else:
                    idx = seg.argmax(axis=1)
                cols[c.name] = np.asarray(c.categories, dtype=object)[idx]
            else:
                v = np.clip(seg[:, 0], 0.0, 1.0) * (c.upper - c.lower) + c.lower  # type: ignore[operator]
                cols[c.name] = np.round(v) if c.integer else v
        return pd.DataFrame(cols)


def encode_target(y: pd.Series, schema: Schema) -> np.ndarray:
    """Class labels -> integer codes in schema order."""
    import pandas as pd

    codes = pd.Categorical(y.astype(str), categories=list(schema.classes)).codes
    if (codes < 0).any():
        raise ValueError(f"labels outside the schema's classes {list(schema.classes)}")
    return codes.astype(np.int64)
