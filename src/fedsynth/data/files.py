"""The benchmark files: where they live, their pinned SHA-256, and a verified download.

Files are read from the data directory ``$FEDSYNTH_DATA`` (CI points it at ``../shared/datasets``),
laid out as ``<name>/<file>.csv.gz``. Every file has a pinned SHA-256; :func:`fetch` downloads a
missing file from a mirror URL (``$FEDSYNTH_DATA_MIRROR`` or ``--mirror``) with the same layout and
refuses a file whose checksum differs. Standard library only: ``fedsynth data verify`` / ``fetch``
load no numerical stack (the loaders are in :mod:`fedsynth.data.datasets`).
"""

from __future__ import annotations

import hashlib
import os
import urllib.request
from pathlib import Path

_FM = "fashion_mnist/"
#: sha256 of every file this registry reads (the data-directory layout).
CHECKSUMS: dict[str, str] = {
    "adult/adult.csv.gz": "020e937679cdc52788c5245ee380b93586fdfdcbd89503550194edbfa5a35831",
    "adult/adult_private_pgm.csv.gz": "75d12835de9e6bed32e18134f610e551383aa7f834658c8c0169dcb9fe40ce7d",
    "breast_cancer/breast_cancer.csv.gz": "d644ad112b9a1681f05e7618d6c6e61f9b9b93ef7227bd08508a88ddd61fd6b7",
    "census/census.csv.gz": "6d30fbcce2d2d7ec9b17f7ce68fdb526092bc5ae85f16bd923c3a52139e49cdc",
    "intrusion/intrusion.csv.gz": "f13d77842933d14ff8b51df5b6e838e92bf135aa31f80de80a647ec294a5d37f",
    "marketing/marketing.csv.gz": "fc2e40c64a0f59b41addf4c19ded85c20196f8ef0fb275743b96d1f14d775b73",
    "mushroom/mushroom.csv.gz": "f4b2f164b644e69a50e50bcde8f5b8c9293a369df1a67eb1ee40dec21b1c5eef",
    "titanic/titanic.csv.gz": "84a2745ba4093dd94e9f6d39b48db665ec69619bd169cfdeac091a88b77ffaa6",
    "wine_quality/wine_quality.csv.gz": "80ac5639b451223d54e67c10c02d68c122222786d75c1230dc836b687c5d2bbc",
    "mnist/train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "mnist/train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "mnist/t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "mnist/t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    _FM + "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
    _FM + "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
    _FM + "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
    _FM + "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
}


class DatasetError(ValueError):
    """A benchmark dataset is unknown, missing or fails its checksum (a user error: CLI exit 2)."""


def data_dir() -> Path:
    d = os.environ.get("FEDSYNTH_DATA")
    if not d:
        here = Path.cwd() / ".." / "shared" / "datasets"
        if here.is_dir():
            return here.resolve()
        raise DatasetError(
            "no data directory: set FEDSYNTH_DATA to the folder holding the benchmark datasets "
            "(e.g. export FEDSYNTH_DATA=../shared/datasets), or run `fedsynth data fetch --mirror URL`"
        )
    return Path(d)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def dataset_path(rel: str, *, verify: bool = False) -> Path:
    p = data_dir() / rel
    if not p.exists():
        raise DatasetError(f"dataset file {p} not found; set FEDSYNTH_DATA or run `fedsynth data fetch`")
    if verify and sha256_file(p) != CHECKSUMS[rel]:
        raise DatasetError(f"{p} does not match its pinned sha256; re-download it")
    return p


def fetch(rel: str, mirror: str, dest: Path | None = None) -> Path:
    """Download ``rel`` from ``mirror`` (same layout), verify its checksum, write atomically."""
    if rel not in CHECKSUMS:
        raise DatasetError(f"unknown dataset file {rel!r}")
    root = dest or data_dir()
    target = root / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".part")
    with urllib.request.urlopen(mirror.rstrip("/") + "/" + rel, timeout=60) as r, open(tmp, "wb") as f:
        while chunk := r.read(1 << 20):
            f.write(chunk)
    got = sha256_file(tmp)
    if got != CHECKSUMS[rel]:
        tmp.unlink(missing_ok=True)
        raise DatasetError(f"checksum mismatch for {rel}: got {got}, expected {CHECKSUMS[rel]}")
    os.replace(tmp, target)
    return target


__all__ = ["CHECKSUMS", "DatasetError", "data_dir", "dataset_path", "fetch", "sha256_file"]
