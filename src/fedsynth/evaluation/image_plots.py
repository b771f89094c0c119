"""Sample grids of image generators (the SGDE paper's Figure 3): one row per class.

:func:`sample_grid` takes one silo's :class:`~fedsynth.generators.base.GeneratorSet`, a
:class:`~fedsynth.generators.pool.GeneratorPool`, a federation-level generator set, or a plain
list of generators; each row holds ``per_class`` samples of one class (drawn through the pool, so a
per-class set and a joint model are handled alike). matplotlib is imported only when drawing (Agg,
no display). The image is sized so that every sample pixel is a whole number of PNG pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fedsynth.data.images import to_images
from fedsynth.data.schema import Schema
from fedsynth.generators.base import Generator, GeneratorSet
from fedsynth.generators.pool import GeneratorPool

#: PNG pixels per sample pixel, a gap between tiles, and the label column / title band, in PNG px
SCALE = 3
GAP = 2
LABEL_W = 90
TITLE_H = 30


def grid_size(schema: Schema, n_classes: int, per_class: int) -> tuple[int, int]:
    """(width, height) in PNG pixels of the grid :func:`sample_grid` writes."""
    if schema.image is None:
        raise ValueError("sample_grid needs an image schema")
    _, h, w = schema.image
    width = LABEL_W + per_class * (w * SCALE + GAP) + GAP
    height = TITLE_H + n_classes * (h * SCALE + GAP) + GAP
    return width, height


def _pool(src: GeneratorSet | GeneratorPool | Sequence[Generator], schema: Schema) -> GeneratorPool:
    if isinstance(src, GeneratorPool):
        return src
    if isinstance(src, GeneratorSet):
        return GeneratorPool(schema, src.generators)
    return GeneratorPool(schema, list(src))


def sample_grid(
    generators: GeneratorSet | GeneratorPool | Sequence[Generator],
    schema: Schema,
    path: Path | str,
    title: str,
    per_class: int = 8,
    class_names: Sequence[str] | None = None,
    seed: int = 0,
) -> Path:
    """A PNG of ``per_class`` samples per class (one row each, grayscale; colour for 3 channels),
    written atomically to ``path``; returns ``path``. Rows follow the schema's class order; a class
    no generator can draw is left out. ``class_names`` label the rows (default: the class labels)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if schema.image is None:
        raise ValueError("sample_grid needs an image schema")
    if per_class < 1:
        raise ValueError("per_class must be >= 1")
    pool = _pool(generators, schema)
    classes = pool.classes
    if class_names is not None and len(class_names) != len(schema.classes):
        raise ValueError(f"{len(class_names)} class names for {len(schema.classes)} classes")
    names = dict(zip(schema.classes, class_names or schema.classes, strict=True))
    c, h, w = schema.image
    rows = []
    for k, cls in enumerate(classes):
        df = pool.sample(per_class, seed=seed * 1009 + k, class_weights={x: float(x == cls) for x in classes})
        x, _ = to_images(df, schema)
        rows.append(x)

    width, height = grid_size(schema, len(classes), per_class)
    dpi = 100
    fig = plt.figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    fig.text(0.5, 1 - (TITLE_H / 2) / height, title, ha="center", va="center", fontsize=9)
    for r, (cls, x) in enumerate(zip(classes, rows, strict=True)):
        y0 = TITLE_H + r * (h * SCALE + GAP) + GAP
        fig.text(
            (LABEL_W - 6) / width,
            1 - (y0 + h * SCALE / 2) / height,
            str(names[cls]),
            ha="right",
            va="center",
            fontsize=8,
        )
        for j in range(per_class):
            x0 = LABEL_W + j * (w * SCALE + GAP) + GAP
            ax = fig.add_axes(
                (x0 / width, 1 - (y0 + h * SCALE) / height, w * SCALE / width, h * SCALE / height)
            )
            img = x[j]
            if c == 1:
                ax.imshow(img[0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            else:
                ax.imshow(np.moveaxis(img[:3], 0, -1), interpolation="nearest")
            ax.set_axis_off()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    try:
        fig.savefig(tmp, dpi=dpi)
        tmp.replace(path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return path


__all__ = ["grid_size", "sample_grid"]
