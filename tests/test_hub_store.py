"""The artifact store and the client's side of the transfer (issue 12: defects 7, 10, 11, 2).

* 7: refused pushes leave orphan blobs; ``BlobStore.gc`` / ``fedsynth hub gc`` / hub start-up
  remove exactly those, keeping referenced blobs (pushes and round results) and fresh ones.
* 10: two processes on one store: ``clean_tmp`` spares a live process's in-flight write, a new
  ``blobs/xx/`` folder is fsynced in its parent, a corrupted blob is repaired by the next put.
* 11: downloads are capped at the announced size and hashed while streaming (fake hubs).
* 2 (client): hostile JSON from a hub is a clear error naming the field; the CLI exits 2.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fedsynth.artifacts.card import ArtifactError
from fedsynth.cli import app
from fedsynth.exchange import store as store_mod
from fedsynth.exchange.client import HubAdmin, HubAnswerError, HubClient, HubError, PoolEntry
from fedsynth.exchange.process import RunningHub
from fedsynth.exchange.protocol import Requirements
from fedsynth.exchange.store import BlobStore, referenced_blobs
from tests.conftest_hub import BACKENDS, make_set, start_hub, tiny_schema, tiny_spec, vae_fams

OLD = 7200.0  # seconds: older than the default grace of an hour


def _on_disk(root: Path) -> dict[str, Path]:
    return dict(BlobStore(root).digests())


def _age(paths: Any, seconds: float = OLD) -> None:
    t = time.time() - seconds
    for p in paths:
        os.utime(p, (t, t))


# ---------------------------------------------------------------- 7: orphan blobs
@pytest.fixture(scope="module", params=BACKENDS)
def hub(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    yield from start_hub(request.param, tmp_path_factory.mktemp(f"store-{request.param}"))


def _engine(hub: RunningHub) -> Any:
    from fedsynth.exchange import db

    return db.make_engine(hub.db_url)


def test_gc_removes_exactly_the_orphans_of_refused_pushes(hub: RunningHub) -> None:
    from tests.test_hub_rounds import PGM_SPEC, SCHEMA, open_pgm, round_result

    s = tiny_schema()
    spec = tiny_spec(s)
    root = Path(hub.store_dir)
    with HubAdmin(hub.url, hub.admin_token) as adm:
        adm.create_federation(
            "gc", s, vae_fams(spec), max_epsilon=1.0, max_delta=1e-5, silo_epsilon_budget=1.0
        )
        silo = HubClient(hub.url, adm.add_silo("gc", "s0"))
        silo.push(make_set(s, spec, epsilon=1.0, seed=0))  # the whole budget
        before = set(_on_disk(root))
        for i in range(1, 51):  # each is stored, then refused by the ledger
            with pytest.raises(HubError) as e:
                silo.push(make_set(s, spec, epsilon=1.0, seed=i))
            assert e.value.status == 409
        # a federation round's result references blobs too
        adm.create_federation("gcr", SCHEMA, {"pgm/1": PGM_SPEC}, max_epsilon=1.5, max_delta=1e-4)
        silos = [HubClient(hub.url, adm.add_silo("gcr", f"r{i}")) for i in range(2)]
        r = open_pgm(adm, "gcr")
        for c in silos:
            c.join_round(r.id)
        adm.start_round("gcr", r.id)
        adm.post_round_result("gcr", r.id, round_result(), contributors=[0, 1])

        blobs = _on_disk(root)
        referenced = referenced_blobs(_engine(hub))
        pool = adm.pool("gc") + adm.pool("gcr")
        assert referenced >= {d for e in pool for d in (e.weights_sha256, e.card_sha256)}
        assert any(e.round_id is not None for e in pool)
        orphans = set(blobs) - referenced
        assert len(orphans) == 50 * 2 * len(s.classes)  # a weights and a card blob per generator
        assert orphans.isdisjoint(before)

        _age(blobs.values())
        fresh = BlobStore(root).put(b"an upload in flight in another process")
        # referenced set read first (as the CLI does), then the scan: the CLI is the public path
        res = CliRunner().invoke(app, ["hub", "gc", "--db", hub.db_url, "--store", str(root)])
        assert res.exit_code == 0, res.output
        assert f"removed {len(orphans)} orphan blobs" in res.output
        after = set(_on_disk(root))
        assert after == (set(blobs) - orphans) | {fresh}
        assert referenced <= after and fresh in after
        # every generator still downloads and verifies (pushes and the round's result)
        assert len(silo.pull()) == len(adm.pool("gc"))
        assert len(silos[0].pull()) == len(adm.pool("gcr"))


def test_gc_at_hub_start_up(hub: RunningHub) -> None:
    root = Path(hub.store_dir)
    store = BlobStore(root)
    old = [store.put(f"orphan {i}".encode()) for i in range(5)]
    young = store.put(b"young orphan")
    _age(store.path(d) for d in old)
    hub.restart()
    t0 = time.monotonic()
    while any(store.has(d) for d in old) and time.monotonic() - t0 < 20:
        time.sleep(0.05)
    assert not any(store.has(d) for d in old)
    assert store.has(young)


def test_gc_never_races_a_put_that_reuses_an_old_orphan(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    d = store.put(b"old orphan, about to be pushed again")
    _age([store.path(d)])
    assert store.put(b"old orphan, about to be pushed again") == d  # a new push reuses the file
    st = store.gc(set(), older_than_s=3600)
    assert store.has(d) and st.removed == 0 and st.kept_recent == 1


def test_gc_cli_refuses_an_unmigrated_database(tmp_path: Path) -> None:
    BlobStore(tmp_path / "st").put(b"x")
    res = CliRunner().invoke(
        app, ["hub", "gc", "--db", f"sqlite:///{tmp_path / 'none.db'}", "--store", str(tmp_path / "st")]
    )
    assert res.exit_code == 2 and "cannot read the referenced blobs" in res.output
    assert len(_on_disk(tmp_path / "st")) == 1


# ---------------------------------------------------------------- 10: several processes
_WRITER = """
import os, sys
from fedsynth.exchange import store
real = os.replace
def held(a, b):  # the temp file is written and fsynced; hold it in flight until told
    print("in-flight", flush=True)
    sys.stdin.readline()
    real(a, b)
os.replace = held
print(store.BlobStore(sys.argv[1]).put(b"w" * 100_000), flush=True)
"""


def _writer(root: Path) -> subprocess.Popen[str]:
    p = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert p.stdout is not None and p.stdout.readline().strip() == "in-flight"
    return p


def test_clean_tmp_spares_another_live_process(tmp_path: Path) -> None:
    BlobStore(tmp_path)
    w = _writer(tmp_path)
    (inflight,) = list((tmp_path / "tmp").iterdir())
    assert BlobStore(tmp_path).clean_tmp() == 0  # a second process starting up
    assert inflight.exists()
    assert w.stdin is not None and w.stdout is not None
    w.stdin.write("\n")
    w.stdin.flush()
    digest = w.stdout.readline().strip()
    assert w.wait(30) == 0
    assert BlobStore(tmp_path).get(digest) == b"w" * 100_000


def test_clean_tmp_removes_dead_and_stale_leftovers(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    w = _writer(tmp_path)
    os.kill(w.pid, signal.SIGKILL)
    w.wait(30)
    (dead,) = list(store.tmp.iterdir())
    stale = store.tmp / "tmpabc123"  # a name of another host or an older version, long ago
    stale.write_bytes(b"x")
    _age([stale])
    recent = store.tmp / "put-unknown"  # not ours to judge and recent: kept
    recent.write_bytes(b"x")
    d = store.put(b"moved aside by a gc that died")  # a dead gc's blob is put back, not deleted
    os.rename(store.path(d), store.tmp / f"gc.{store._host}.{w.pid}.{d}")
    assert store.clean_tmp() == 3
    assert not dead.exists() and not stale.exists() and recent.exists()
    assert store.get(d) == b"moved aside by a gc that died"
    assert sorted(p.name for p in store.tmp.iterdir()) == ["put-unknown"]


def test_new_blob_folder_is_fsynced_in_its_parent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = BlobStore(tmp_path)
    data = b"a blob whose folder is new"
    store.path(hashlib.sha256(data).hexdigest()).parent.rmdir()
    synced: list[Path] = []
    real = store_mod._fsync_dir
    monkeypatch.setattr(store_mod, "_fsync_dir", lambda d: (synced.append(Path(d)), real(d)))
    store.put(data)
    assert store.blobs in synced  # the new xx/ entry itself is durable
    # and a fresh store has all 256 folders, made durable once when it is opened
    synced.clear()
    BlobStore(tmp_path / "other")
    assert len(list((tmp_path / "other" / "blobs").iterdir())) == 256
    assert tmp_path / "other" / "blobs" in synced


def test_put_repairs_a_corrupted_blob(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    data = os.urandom(4096)
    d = store.put(data)
    p = store.path(d)
    bad = bytearray(p.read_bytes())
    bad[100] ^= 0xFF  # same size, different bytes
    p.write_bytes(bytes(bad))
    with pytest.raises(OSError, match="corrupted"):
        store.get(d)
    assert store.put(data) == d
    assert store.get(d) == data


def _put_many(root: str, seed: int) -> list[str]:
    s = BlobStore(root)
    s.clean_tmp()
    return [s.put(f"blob {i % 150}".encode() * (1 + i % 7)) for i in range(seed, seed + 300)]


def test_two_processes_put_into_one_store(tmp_path: Path) -> None:
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(2) as pool:
        out = pool.starmap(_put_many, [(str(tmp_path), 0), (str(tmp_path), 75)])
    store = BlobStore(tmp_path)
    for d in {d for ds in out for d in ds}:
        assert hashlib.sha256(store.get(d)).hexdigest() == d
    assert not list(store.tmp.iterdir())


# ---------------------------------------------------------------- 11 and 2: a hostile hub
class FakeHub:
    """A hub on 127.0.0.1 that answers each GET path with a configured ``(status, headers, body)``
    where body is bytes or an iterator of chunks; counts the bytes it managed to send."""

    def __init__(self) -> None:
        self.routes: dict[str, Callable[[], tuple[int, dict[str, str], Any]]] = {}
        self.sent = 0
        fake = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: object) -> None:
                pass

            def do_GET(self) -> None:
                route = fake.routes.get(self.path.split("?")[0])
                status, headers, body = route() if route else (404, {}, b'{"detail": "no"}')
                self.send_response(status)
                chunks = [body] if isinstance(body, bytes) else body
                if isinstance(body, bytes):
                    headers = {"Content-Length": str(len(body)), **headers}
                else:
                    headers = {"Connection": "close", **headers}  # body until the socket closes
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                try:
                    for c in chunks:
                        self.wfile.write(c)
                        fake.sent += len(c)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                if not isinstance(body, bytes):
                    self.close_connection = True

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def json(self, path: str, obj: Any = None, raw: bytes | None = None) -> None:
        body = raw if raw is not None else json.dumps(obj).encode()
        self.routes[path] = lambda: (200, {"Content-Type": "application/json"}, body)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


FED = "/v1/federations/f"
CARD = b'{"not": "parsed before its hash is checked"}'


def _entry(**kw: Any) -> dict[str, Any]:
    e = {
        "id": 1,
        "silo": "s",
        "family": "dp-vae/1",
        "class_label": "no",
        "epsilon": 1.0,
        "delta": 1e-6,
        "accountant": "rdp",
        "created": "2026-01-01T00:00:00Z",
        "size": 1000,
        "weights_sha256": hashlib.sha256(b"w" * 1000).hexdigest(),
        "card_sha256": hashlib.sha256(CARD).hexdigest(),
        "push_id": 1,
        "scope": "silo",
        "round_id": None,
    }
    e.update(kw)
    return e


@pytest.fixture
def fake() -> Iterator[FakeHub]:
    f = FakeHub()
    f.json("/v1/whoami", {"kind": "silo", "federation": "f", "silo": "s"})
    s = tiny_schema()
    req = Requirements("f", s, vae_fams(tiny_spec(s)), 1.0, 1e-5, 3.0).to_dict()
    f.json(f"{FED}/requirements", {**req, "epsilon_spent": 0.0})
    f.json(f"{FED}/pool", [_entry()])
    f.routes[f"{FED}/generators/1/card"] = lambda: (200, {}, CARD)
    yield f
    f.close()


def _flood(total: int) -> Iterator[bytes]:
    chunk = b"\0" * (1 << 20)
    for _ in range(total // len(chunk)):
        yield chunk


def test_download_is_cut_off_past_the_announced_size(fake: FakeHub) -> None:
    flood = 300 << 20
    fake.routes[f"{FED}/generators/1/weights"] = lambda: (200, {}, _flood(flood))
    c = HubClient(fake.url, "t")
    (e,) = c.list_pool()
    t0 = time.monotonic()
    with pytest.raises(ArtifactError, match="more than the 1000 bytes"):
        c.download(e)
    assert time.monotonic() - t0 < 10
    time.sleep(0.2)
    assert fake.sent < 64 << 20, f"the client kept reading: the hub sent {fake.sent} bytes"
    assert c.bytes_received < 4 << 20


def test_download_refuses_an_announced_content_length_over_the_size(fake: FakeHub) -> None:
    fake.routes[f"{FED}/generators/1/weights"] = lambda: (200, {}, b"w" * 5000)
    c = HubClient(fake.url, "t")
    with pytest.raises(ArtifactError, match="announces 5000 bytes"):
        c.download(c.list_pool()[0])


def test_download_of_the_right_size_with_a_wrong_hash(fake: FakeHub) -> None:
    fake.routes[f"{FED}/generators/1/weights"] = lambda: (200, {}, b"v" * 1000)
    c = HubClient(fake.url, "t")
    with pytest.raises(ArtifactError, match="weights do not match their sha256"):
        c.download(c.list_pool()[0])
    fake.routes[f"{FED}/generators/1/weights"] = lambda: (200, {}, b"w" * 999)
    with pytest.raises(ArtifactError, match="truncated"):
        c.download(c.list_pool()[0])
    fake.routes[f"{FED}/generators/1/weights"] = lambda: (200, {}, b"w" * 1000)
    assert c.download(c.list_pool()[0]) == (CARD, b"w" * 1000)  # the honest answer passes


HOSTILE_POOLS = [
    ('[{"id": 1' + "9" * 400 + "}]", "pool[0].id: an integer of 401 digits"),
    # one limit with fedsynth.jsonsafe (what the hub accepts): |n| <= 2**63 - 1
    ('[{"id": ' + str(2**63) + "}]", r"pool[0].id: an out-of-range integer (|n| > 2**63 - 1)"),
    ('[{"id": -' + "1" * 20 + "}]", "pool[0].id: an integer of 20 digits"),
    (json.dumps([_entry(size=None)]).replace('"size": null, ', ""), "field 'size' is missing"),
    (json.dumps([_entry()]).replace('"epsilon": 1.0', '"epsilon": NaN'), "pool[0].epsilon: the non-finite"),
    (
        json.dumps([_entry()]).replace('"epsilon": 1.0', '"epsilon": 1e400'),
        "pool[0].epsilon: the out-of-range",
    ),
    (
        json.dumps([_entry()]).replace('"rdp"', '"\\ud800"'),
        "pool[0].accountant: a string with a lone surrogate",
    ),
    (json.dumps([_entry(size="1000")]), "field 'size' must be a size"),
    (json.dumps([_entry(weights_sha256="../../x")]), "field 'weights_sha256' must be a hex64"),
    (json.dumps({"not": "a list"}), "pool: expected a JSON array"),
    ("<html>", "pool: not JSON"),
]


@pytest.mark.parametrize(("raw", "why"), HOSTILE_POOLS)
def test_hostile_pool_answers_are_clear_errors(fake: FakeHub, raw: str, why: str) -> None:
    fake.json(f"{FED}/pool", raw=raw.encode())
    with pytest.raises(HubAnswerError) as e:
        HubClient(fake.url, "t").list_pool()
    assert why in str(e.value)


def test_hostile_requirements_and_whoami(fake: FakeHub) -> None:
    fake.json(f"{FED}/requirements", raw=b'{"max_epsilon": 1' + b"0" * 400 + b"}")
    with pytest.raises(HubAnswerError, match="max_epsilon: an integer of 401 digits"):
        HubClient(fake.url, "t").subscribe()
    fake.json(f"{FED}/requirements", {"epsilon_spent": 0.0})
    with pytest.raises(HubAnswerError, match="requirements"):
        HubClient(fake.url, "t").subscribe()
    fake.json("/v1/whoami", {"kind": "silo", "federation": "../admin", "silo": "s"})
    with pytest.raises(HubAnswerError, match="field 'federation' must be a name"):
        HubClient(fake.url, "t")
    # a refusal whose reason holds a lone surrogate is still printable
    fake.routes["/v1/whoami"] = lambda: (403, {}, b'{"detail": "no \\ud800 way"}')
    with pytest.raises(HubError) as e:
        HubClient(fake.url, "t")
    assert e.value.status == 403
    str(e.value).encode("utf-8")


def _cli(*args: str) -> tuple[int, str]:
    """Exit code and output with the console's line wrapping undone."""
    res = CliRunner().invoke(app, list(args))
    assert res.exception is None or isinstance(res.exception, SystemExit), res.output  # no traceback
    return res.exit_code, " ".join(res.output.split())


def test_cli_pull_and_push_exit_2_on_hostile_answers(fake: FakeHub, tmp_path: Path) -> None:
    out = tmp_path / "x.csv"
    pull = ("pull", "--hub", fake.url, "--token", "t", "--rows", "10", "--out", str(out))
    fake.json(f"{FED}/pool", raw=json.dumps([_entry(size=None)]).replace('"size": null, ', "").encode())
    code, text = _cli(*pull)
    assert code == 2 and "field 'size' is missing" in text, text
    fake.json(f"{FED}/pool", [_entry()])
    fake.routes[f"{FED}/generators/1/weights"] = lambda: (200, {}, _flood(50 << 20))
    code, text = _cli(*pull)
    assert code == 2 and "more than the 1000 bytes" in text, text
    assert not out.exists()
    fake.json(f"{FED}/requirements", raw=b'{"max_epsilon": Infinity}')
    for cmd in (pull, ("push", "--hub", fake.url, "--token", "t", "--data", "x.csv", "--target", "y")):
        code, text = _cli(*cmd)
        assert code == 2 and "max_epsilon: the non-finite number Infinity" in text, text


def test_pool_entry_from_dict_keeps_old_hubs_working() -> None:
    e = _entry()
    for k in ("family", "scope", "round_id"):
        del e[k]
    p = PoolEntry.from_dict(e)
    assert (p.family, p.scope, p.round_id, p.size) == ("dp-vae/1", "silo", None, 1000)
