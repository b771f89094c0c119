"""The hub's output check in a worker process (issue 16): torch stays out of the serving process.

The worker gives the same verdicts as the in-process check (good set accepted; finite weights
that decode to NaN refused with the same reason), survives its own death (a killed or idle-
exited worker is replaced on the next push), refuses an artifact whose check hangs, and a real
hub that accepted a neural (torch) push still has no libtorch mapped in its serving process.
"""

from __future__ import annotations

import hashlib
import os
import signal
import time
from pathlib import Path

import pytest
import torch

from fedsynth.artifacts.card import ArtifactError, GeneratorCard
from fedsynth.artifacts.safetensors import tensors_to_bytes
from fedsynth.exchange.client import HubAdmin, HubClient
from fedsynth.exchange.hub.checker import ArtifactChecker
from fedsynth.exchange.process import run_hub
from fedsynth.exchange.protocol import check_artifact
from fedsynth.generators.io import normalise_spec, to_artifact
from tests.conftest_hub import make_set, tiny_schema, tiny_spec, vae_fams


def _items() -> tuple[list[tuple[bytes, bytes]], dict]:
    schema = tiny_schema()
    spec = tiny_spec(schema)
    gs = make_set(schema, spec)
    fams = {"dp-vae/1": normalise_spec("dp-vae/1", spec.to_dict(), schema)}
    return [to_artifact(g) for g in gs.generators], fams


def _nan_decoding(item: tuple[bytes, bytes]) -> tuple[bytes, bytes]:
    """Finite weights (1e30 everywhere) whose decoder output is not finite; honest sha256."""
    schema = tiny_schema()
    g = make_set(schema, tiny_spec(schema)).generators[0]
    with torch.no_grad():
        for p in g.decoder.parameters():  # type: ignore[attr-defined]
            p.fill_(1e30)
    w = tensors_to_bytes(g.tensors(), "dp-vae/1")
    card = GeneratorCard.from_json(item[0]).replace(weights_sha256=hashlib.sha256(w).hexdigest())
    return card.to_json().encode(), w


def test_worker_gives_the_in_process_verdicts_and_replaces_itself() -> None:
    items, fams = _items()
    schema = tiny_schema()
    checker = ArtifactChecker(idle_s=0.5)
    try:
        for card, w in items:
            check_artifact(card, w, schema, fams)
            checker(card, w, schema, fams)
        bad = _nan_decoding(items[0])
        with pytest.raises(ArtifactError) as inline:
            check_artifact(*bad, schema, fams)
        with pytest.raises(ArtifactError) as remote:
            checker(*bad, schema, fams)
        assert str(remote.value) == str(inline.value) and "not finite" in str(remote.value)
        with pytest.raises(ArtifactError, match="sha256"):
            checker(items[0][0], items[1][1], schema, fams)  # another decoder's weights
        # the worker dies (OOM killer, crash): the next check starts a fresh one
        pid = checker.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
        checker(*items[0], schema, fams)
        assert checker.pid not in (None, pid)
        # idle: the worker exits by itself, and is started again on demand
        pid = checker.pid
        time.sleep(1.5)
        assert checker.pid is None
        checker(*items[1], schema, fams)
        assert checker.pid not in (None, pid)
    finally:
        checker.close()
    assert checker.pid is None


def test_a_check_that_does_not_finish_is_refused() -> None:
    items, fams = _items()
    checker = ArtifactChecker(timeout_s=0.01)  # torch alone takes longer than that to import
    try:
        with pytest.raises(ArtifactError, match="did not finish within"):
            checker(*items[0], tiny_schema(), fams)
        assert checker.pid is None  # the hung worker was killed
    finally:
        checker.close()


def _maps_torch(pid: int) -> bool:
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


def test_the_serving_process_never_loads_torch(tmp_path: Path) -> None:
    schema = tiny_schema()
    spec = tiny_spec(schema)
    with run_hub(f"sqlite:///{tmp_path / 'hub.db'}", tmp_path / "store") as hub:
        adm = HubAdmin(hub.url, hub.admin_token)
        adm.create_federation("f", schema, vae_fams(spec), max_epsilon=1.5, max_delta=1e-5)
        c = HubClient(hub.url, adm.add_silo("f", "s1"))
        c.push(make_set(schema, spec))
        assert len(c.list_pool()) == len(schema.classes)  # checked (in the worker) and stored
        c.close()
        adm.close()
        assert hub.procs and not any(_maps_torch(p.pid) for p in hub.procs)
