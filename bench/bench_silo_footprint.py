"""A silo's footprint: peak RSS and wall time of every command one Adult silo runs, each measured as
a real subprocess of the ``fedsynth`` CLI (what the silo's machine pays: interpreter start, imports,
data loading, the work itself).

    FEDSYNTH_DATA=../shared/datasets python bench/bench_silo_footprint.py --json out/silo_footprint.json
    ... --families pgm,vae --skip-pool --skip-flaim      # a quicker subset

How: every command is started with :class:`subprocess.Popen` through a bare launcher
(``python -I -S -c LAUNCHER``) that forks the command and reaps it with ``os.wait4(pid, 0)``;
*peak RSS* is the command's ``ru_maxrss`` (KB on Linux; the maximum over the process and any
descendants it reaped, never a sum), *wall* is fork → exit. The launcher is there because a child's
``ru_maxrss`` starts at its parent's high-water RSS (Linux folds the old address space's peak into
it at exec): reaped straight from this bench (pandas loaded, ~100 MB) every number would be at least
that. Long-running servers (the hub, the Flower SuperNode) are sampled instead: every 0.05–0.1 s the
bench walks the server's process tree in ``/proc`` and records each process's ``VmRSS`` / ``VmHWM``
(per address space, so not inflated) and the tree's summed ``VmRSS`` and PSS.

The data: silo ``i`` is a seeded random 5 % (1 628 rows) of Adult's training table
(``fedsynth.data.datasets.load_dataset("adult").train``, 32 561 rows), drawn with
``default_rng([seed, i])``; silo 0 is *the* silo, the others (which may overlap it) fill the pool.
Every ``--schema`` is Adult's declared (public) schema, ``Schema.to_json()``.

The commands, in order (``S`` = silo 0's CSV, ``T`` = the temp dir, ``H`` = ``http://127.0.0.1:PORT``):

1. ``fedsynth --help``
2. ``fedsynth train-generators --data S --target income --out T/sets/F --generator F --epsilon 1
   --schema T/adult-schema.json`` for each family F of ``--families`` (default: every tabular family
   the CLI's help offers: pgm, vae, gan, diffusion)
3. ``fedsynth sample --generators T/sets/pgm --rows 10000 --out T/sample-pgm.csv``, and the same with
   one ``--generators`` per trained family (a mixed pool)
4. ``FEDSYNTH_HUB_ADMIN_TOKEN=… fedsynth hub serve --db sqlite:///T/hub.db --store T/hub-store
   --port PORT`` (left running; its RSS after the first ``GET /v1/health`` is "the hub at rest")
5. ``fedsynth hub create-federation --hub H --name footprint --dataset adult --families pgm
   --max-epsilon 1.5 --max-delta 1e-5 --silo-budget 3.0`` (the operator; shown for scale)
6. per silo ``NN``: ``fedsynth hub add-silo --hub H --federation footprint --name silo-NN`` (operator)
   then ``fedsynth push --hub H --token TOKEN --data silo-NN.csv --target income`` (subscribe,
   validate, train pgm at the hub's caps, push). Silo 0's push is *the* push; then silos 1, 2, … push
   until the pool holds ``--pool-size`` (40) generators. A pgm set is ONE joint model (class
   included), so a 40-generator pgm pool takes 40 silos, not 20 × 2 classes; ``--skip-pool`` stops
   after silo 0.
7. ``fedsynth pull --hub H --token TOKEN0 --rows 10000 --out T/pulled-N.csv`` (downloads and verifies
   every generator, samples; target ≤ 300 MB) when the pool first holds half of ``--pool-size``
   and again at ``--pool-size``; then the hub's own lifetime peak
8. A FLAIM client round on a real local Flower deployment (``fedsynth.federated.deploy.LocalDeployment``:
   ``flower-superlink`` with TLS and SuperNode authentication, ``--flaim-nodes`` ``flower-supernode``
   processes, ``flwr run APP``) running the FLAIM ClientApp/ServerApp of
   ``fedsynth.federated.flaim_methods`` with the run config ``method=flaim-sa dataset=adult epsilon=1
   clients=K participation=1 rounds=1 split=iid evaluate=false``. One silo's process tree is
   measured: its ``flower-supernode``, the ``flower-superexec`` it starts, and the ``flwr-clientapp``
   processes (one per message) that compute the marginal answers and SecAgg+ shares. The App folder
   holds a two-line module re-exporting ``flaim_methods.server_app`` / ``client_app``: flwr 1.41's
   static check of an app reference only sees ``name = ...`` assignments, not the module's
   ``server_app, client_app = make_apps()``.

The table prints wall s, peak RSS MB and a note per command; ``--json`` writes every measurement
(plus machine load, versions and the git state: other work may change the numbers between runs).
All temporary files, the hub and the Flower processes are removed / stopped in ``finally`` blocks.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ("pgm", "vae", "gan", "diffusion")
TARGET = "income"
FED = "footprint"
PULL_TARGET_MB = 300.0
HUB_REST_TARGET_MB = 150.0


# ----------------------------------------------------------------------------- measuring


@dataclass
class Measure:
    """One command: wall seconds Popen → exit, peak RSS (``ru_maxrss``) in MB."""

    label: str
    args: list[str]
    wall_s: float
    peak_rss_mb: float
    rc: int
    note: str = ""
    cpu_s: float = 0.0
    group: str = ""
    log_tail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def fedsynth_bin() -> str:
    path = Path(sys.executable).with_name("fedsynth")
    found = str(path) if path.exists() else shutil.which("fedsynth")
    if not found:
        raise FileNotFoundError("the fedsynth console script is not installed next to this Python")
    return found


def tail(path: Path, n: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


# A child's ru_maxrss starts at its parent's high-water RSS: Linux folds the old address space's
# peak into the process's maxrss at exec (measured here: `fedsynth --help` forked from a 400 MB
# parent reports 407 MB, from a 10 MB one 45 MB). Popen from this bench (pandas loaded) would put
# a ~100 MB floor under every number, so each command is forked by a bare launcher (python -I -S,
# ~10 MB) that reaps it with os.wait4 and writes its rusage as JSON.
LAUNCHER = """\
import json, os, sys, time
out, argv = sys.argv[1], sys.argv[2:]
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execv(argv[0], argv)
    finally:
        os._exit(127)
_, st, ru = os.wait4(pid, 0)
wall = time.perf_counter() - t0
rc = os.waitstatus_to_exitcode(st)
with open(out, "w") as f:
    json.dump({"wall_s": wall, "maxrss_kb": ru.ru_maxrss, "cpu_s": ru.ru_utime + ru.ru_stime, "rc": rc}, f)
sys.exit(rc if 0 <= rc < 256 else 1)
"""


def measure(
    label: str,
    args: list[str],
    *,
    env: dict[str, str],
    cwd: Path,
    log: Path,
    timeout: float = 900.0,
    group: str = "",
) -> Measure:
    """Run ``args`` as a grandchild (see ``LAUNCHER``): wall is the launcher's fork → ``wait4``,
    peak RSS the command's own ``ru_maxrss``."""
    ru_file = log.with_suffix(".rusage.json")
    with open(log, "wb") as fh:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", LAUNCHER, str(ru_file), *args],
            env=env,
            cwd=cwd,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _killpg(proc.pid, signal.SIGKILL)  # launcher and command share its process group
            proc.wait()
        outer = time.perf_counter() - t0
    try:
        ru = json.loads(ru_file.read_text())
    except (OSError, ValueError):
        ru = {"wall_s": outer, "maxrss_kb": float("nan"), "cpu_s": float("nan"), "rc": proc.returncode or -9}
    rc = int(ru["rc"])
    return Measure(
        label,
        args,
        float(ru["wall_s"]),
        ru["maxrss_kb"] / 1024.0,
        rc,
        cpu_s=float(ru["cpu_s"]),
        group=group,
        log_tail=tail(log) if rc else tail(log, 400),
        extra={"wall_with_launcher_s": outer},
    )


def _killpg(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _status_kb(pid: int) -> dict[str, int]:
    """``VmRSS`` / ``VmHWM`` (KB) of a live process; empty for a zombie or a vanished one."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    k, v = line.split(":", 1)
                    out[k] = int(v.split()[0])
    except OSError:
        pass
    return out


def _ppids() -> dict[int, int]:
    res: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        res[int(d)] = int(stat.rsplit(")", 1)[1].split()[1])
    return res


def _proc_name(pid: int) -> str:
    """The program a process runs: the script after ``python``, else argv[0]'s basename."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return "?"
    if not argv:
        return "?"
    name = Path(argv[0]).name
    if name.startswith("python") and len(argv) > 1:
        return Path(argv[1]).name if not argv[1].startswith("-") else " ".join(argv[1:3])[:60]
    return name


def _pss_kb(pid: int) -> int:
    """Proportional set size (shared pages split between their users), from ``smaps_rollup``."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class TreeSampler:
    """Polls a process tree in ``/proc``. Per process and program (a forked child that execs is
    a new program): the highest ``VmHWM`` seen, exact for a process alive at the last poll, a
    lower bound for one that exited between polls. For the tree: its peak summed ``VmRSS`` (shared
    pages counted once per process) and peak summed PSS (shared pages split: what the machine held
    at once)."""

    def __init__(self, root: int, interval: float = 0.1) -> None:
        self.root, self.interval = root, interval
        self.hwm: dict[tuple[int, str], int] = {}
        self.peak_sum_kb = 0
        self.peak_pss_kb = 0
        self.seen: dict[tuple[int, str], list[float]] = {}  # first and last poll it was alive
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if not self._stop.is_set():
            self.poll()
            self._stop.set()
            self._thread.join(5)

    def tree(self) -> list[int]:
        kids: dict[int, list[int]] = {}
        for pid, ppid in _ppids().items():
            kids.setdefault(ppid, []).append(pid)
        out, todo = [], [self.root]
        while todo:
            p = todo.pop()
            out.append(p)
            todo.extend(kids.get(p, []))
        return out

    def poll(self) -> None:
        rss = pss = 0
        for pid in self.tree():
            st = _status_kb(pid)
            if not st:  # a zombie or gone
                continue
            key = (pid, _proc_name(pid))
            self.hwm[key] = max(self.hwm.get(key, 0), st.get("VmHWM", 0))
            now = time.perf_counter()
            self.seen.setdefault(key, [now, now])[1] = now
            rss += st.get("VmRSS", 0)
            pss += _pss_kb(pid)
        self.peak_sum_kb = max(self.peak_sum_kb, rss)
        self.peak_pss_kb = max(self.peak_pss_kb, pss)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.poll()

    def lifetimes(self, name: str) -> list[float]:
        """Seconds each process running ``name`` was seen alive (a lower bound on its life)."""
        return [t1 - t0 for (_, n), (t0, t1) in self.seen.items() if n == name]

    def by_name(self) -> dict[str, list[float]]:
        """Peak MB of every process seen, grouped by the last program it ran (the samples taken
        between a fork and its exec belong to the parent's program and are left out)."""
        last: dict[int, str] = {}
        for pid, name in self.hwm:  # insertion order: a pid's last program comes last
            last[pid] = name
        out: dict[str, list[float]] = {}
        for (pid, name), kb in self.hwm.items():
            if last[pid] == name:
                out.setdefault(name, []).append(kb / 1024.0)
        return out


# ----------------------------------------------------------------------------- data


def make_silos(tmp: Path, n_silos: int, frac: float, seed: int) -> tuple[list[Path], Path, int]:
    """``n_silos`` CSVs, silo ``i`` a seeded random ``frac`` of Adult's training table (drawn with
    ``default_rng([seed, i])``, so silo 0 does not depend on how many follow; silos may overlap),
    and Adult's declared schema as JSON."""
    import numpy as np

    from fedsynth.data.datasets import load_dataset

    bench = load_dataset("adult", seed=0)
    train = bench.train
    assert bench.schema.target == TARGET, bench.schema.target
    size = round(frac * len(train))
    paths = []
    for i in range(n_silos):
        idx = np.sort(np.random.default_rng([seed, i]).choice(len(train), size, replace=False))
        p = tmp / "silos" / f"silo-{i:02d}.csv"
        p.parent.mkdir(parents=True, exist_ok=True)
        train.iloc[idx].to_csv(p, index=False)
        paths.append(p)
    schema = tmp / "adult-schema.json"
    schema.write_text(bench.schema.to_json())
    return paths, schema, size


# ----------------------------------------------------------------------------- the hub


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return bool(r.status == 200)
    except OSError:
        return False


@dataclass
class Hub:
    proc: subprocess.Popen
    url: str
    admin_token: str
    started: float
    healthy_s: float = 0.0
    sampler: TreeSampler | None = None


@contextlib.contextmanager
def hub_serve(fs: str, tmp: Path, env: dict[str, str]) -> Iterator[Hub]:
    port = free_port()
    admin = "fsa_" + secrets.token_urlsafe(32)
    args = [fs, "hub", "serve", "--db", f"sqlite:///{tmp / 'hub.db'}", "--store", str(tmp / "hub-store")]
    args += ["--port", str(port)]
    log = open(tmp / "logs" / "hub-serve.log", "wb")  # noqa: SIM115 - open for the hub's lifetime
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        args,
        env={**env, "FEDSYNTH_HUB_ADMIN_TOKEN": admin},
        cwd=tmp,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    hub = Hub(proc, f"http://127.0.0.1:{port}", admin, t0)
    try:
        while not http_ok(f"{hub.url}/v1/health"):
            if proc.poll() is not None or time.perf_counter() - t0 > 120:
                raise RuntimeError("hub serve did not come up:\n" + tail(tmp / "logs" / "hub-serve.log"))
            time.sleep(0.05)
        hub.healthy_s = time.perf_counter() - t0
        hub.sampler = TreeSampler(proc.pid, 0.1).__enter__()
        yield hub
    finally:
        if hub.sampler is not None:
            hub.sampler.stop()
        log.close()
        if proc.returncode is None and proc.poll() is None:
            _killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                _killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        _killpg(proc.pid, signal.SIGKILL)  # anything left in the hub's own process group


def stop_hub(hub: Hub, log: Path) -> Measure:
    """The hub's lifetime peak: its ``VmHWM`` read while it is still alive (exact: a fresh address
    space since its exec), then SIGTERM and reap it. Its ``ru_maxrss`` from ``wait4`` is kept in
    ``extra`` only: it is floored at this bench's own peak (the hub is forked from it; see
    ``LAUNCHER``)."""
    assert hub.sampler is not None
    hub.sampler.stop()
    hwm = _status_kb(hub.proc.pid).get("VmHWM", 0)
    tree = hub.sampler.by_name()
    os.kill(hub.proc.pid, signal.SIGTERM)
    timer = threading.Timer(20, lambda: _killpg(hub.proc.pid, signal.SIGKILL))
    timer.start()
    try:
        _, status, ru = os.wait4(hub.proc.pid, 0)
    finally:
        timer.cancel()
    hub.proc.returncode = os.waitstatus_to_exitcode(status)
    procs = sum(len(v) for v in tree.values())
    return Measure(
        "hub serve: lifetime peak (after the pushes and the pull)",
        hub.proc.args if isinstance(hub.proc.args, list) else [str(hub.proc.args)],
        time.perf_counter() - hub.started,
        hwm / 1024.0,
        0 if hub.proc.returncode in (0, -signal.SIGTERM) else hub.proc.returncode,
        note=f"VmHWM before SIGTERM; {procs} process(es) in its tree; wall = its whole life",
        cpu_s=ru.ru_utime + ru.ru_stime,
        group="hub",
        log_tail=tail(log, 400),
        extra={
            "tree_peak_sum_mb": hub.sampler.peak_sum_kb / 1024.0,
            "tree_peak_pss_mb": hub.sampler.peak_pss_kb / 1024.0,
            "tree_mb": tree,
            "ru_maxrss_mb_floored_by_parent": ru.ru_maxrss / 1024.0,
        },
    )


# ----------------------------------------------------------------------------- FLAIM


FLAIM_WRAPPER = (
    '"""Re-exports for flwr 1.41, whose app-reference check only sees plain `name = ...`."""\n\n'
    "from fedsynth.federated import flaim_methods as _m\n\n"
    "server_app = _m.server_app\n"
    "client_app = _m.client_app\n"
)


def flaim_round(tmp: Path, env: dict[str, str], nodes: int, method: str, rounds: int) -> list[Measure]:
    """One FLAIM run on a local SuperLink + ``nodes`` SuperNodes; silo 0's process tree is measured."""
    from fedsynth.federated.deploy import LocalDeployment, write_app

    work = tmp / "flaim"
    cfg: dict[str, object] = {
        "method": method,
        "dataset": "adult",
        "epsilon": 1.0,
        "clients": nodes,
        "participation": 1.0,
        "rounds": rounds,
        "split": "iid",
        "seed": 0,
        "evaluate": False,
        "rows": 1000,
        "min-nodes": nodes,
        "secagg-timeout": 300.0,
        "out": str(work / "report.json"),
    }
    app = write_app(work / "app", "flaim_sf:server_app", "flaim_sf:client_app", cfg, name="fedsynth-flaim")
    (app / "flaim_sf.py").write_text(FLAIM_WRAPPER)
    saved = os.environ.copy()
    os.environ.update(env)  # LocalDeployment copies os.environ for its processes
    try:
        t0 = time.perf_counter()
        with LocalDeployment(work / "fed", num_nodes=nodes, tls=True, node_auth=True) as dep:
            node0 = dep.procs[1]  # procs[0] is the SuperLink
            with TreeSampler(node0.pid, 0.05) as silo, TreeSampler(dep.procs[0].pid, 0.1) as link:
                up = time.perf_counter() - t0
                t1 = time.perf_counter()
                res = dep.run_app(app, timeout=900)
                run_s = time.perf_counter() - t1
            logs = dep.logs
    finally:
        os.environ.clear()
        os.environ.update(saved)
    rep: dict[str, Any] = {}
    if (work / "report.json").exists():
        rep = json.loads((work / "report.json").read_text())
    ok = res.returncode == 0 and bool(rep)
    err = "" if ok else (res.stdout[-1500:] + res.stderr[-1500:] + tail(logs / "supernode0.log"))
    tree = silo.by_name()
    what = (
        f"{method}, {rounds} round(s), K={nodes} SuperNodes, TLS + node auth; "
        f"{rep.get('secagg_rounds', '?')} SecAgg+ sums"
    )
    args = ["flwr", "run", str(app), dep.connection]
    out = [
        Measure(
            "FLAIM: silo 0's SuperNode tree (summed)",
            args,
            run_s,
            silo.peak_sum_kb / 1024.0,
            res.returncode if not ok else 0,
            note=f"peak Σ VmRSS of supernode + superexec + clientapps (Σ PSS "
            f"{silo.peak_pss_kb / 1024:.0f} MB); wall = flwr run; {what}",
            group="flaim",
            log_tail=err,
            extra={
                "tree_mb": tree,
                "tree_peak_pss_mb": silo.peak_pss_kb / 1024.0,
                "clientapp_lifetimes_s": silo.lifetimes("flwr-clientapp"),
                "report": rep,
                "deployment_up_s": up,
                "superlink_tree_mb": link.by_name(),
            },
        )
    ]
    for name, note in (
        ("flower-supernode", "the silo's long-running SuperNode (VmHWM)"),
        ("flower-superexec", "started by the SuperNode, spawns the ClientApps (VmHWM)"),
        ("flwr-clientapp", "one process per message: loads Adult, marginals + SecAgg+ share"),
    ):
        mbs = tree.get(name, [])
        life = silo.lifetimes(name)
        per_msg = name == "flwr-clientapp"
        out.append(
            Measure(
                f"FLAIM: {name}" + (f" (max of {len(mbs)})" if per_msg else ""),
                args,
                statistics.median(life) if per_msg and life else float("nan"),
                max(mbs, default=float("nan")),
                0 if mbs else 1,
                note=note + ("; wall = median life; sampled every 0.05 s (lower bounds)" if per_msg else ""),
                group="flaim",
                extra={"all_mb": mbs},
            )
        )
    out.append(
        Measure(
            "FLAIM: server side (SuperLink tree, not the silo's)",
            args,
            run_s,
            link.peak_sum_kb / 1024.0,
            0,
            note=f"Σ VmRSS of superlink + superexec + serverapp (Σ PSS {link.peak_pss_kb / 1024:.0f} MB)",
            group="flaim",
        )
    )
    return out


# ----------------------------------------------------------------------------- the bench


def token_of(log: Path) -> str:
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    tok = lines[-1] if lines else ""
    if not tok.startswith("fsk_"):
        raise RuntimeError(f"add-silo printed no token: {tail(log)}")
    return tok


def last_line(m: Measure) -> str:
    lines = [ln.strip() for ln in m.log_tail.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def flat(m: Measure) -> str:
    """The command's output tail on one line (rich wraps long lines)."""
    return " ".join(m.log_tail.split())


def check(m: Measure, results: list[Measure]) -> Measure:
    results.append(m)
    status = "ok" if m.rc == 0 else f"FAILED rc={m.rc}"
    print(f"  {m.label}: {m.wall_s:.2f} s, {m.peak_rss_mb:.0f} MB, {status}", flush=True)
    if m.rc != 0 and m.log_tail:
        print("    " + m.log_tail[-800:].replace("\n", "\n    "), flush=True)
    return m


def run(opts: argparse.Namespace) -> dict[str, Any]:
    fs = fedsynth_bin()
    tmp = Path(tempfile.mkdtemp(prefix="silo-footprint-"))
    (tmp / "logs").mkdir()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "120"}
    env.setdefault("FEDSYNTH_DATA", str(ROOT.parent / "shared" / "datasets"))
    results: list[Measure] = []
    t_start = time.perf_counter()
    load0 = os.getloadavg()
    pool_target = opts.pool_size
    n_silos = 1 if opts.skip_pool else pool_target  # enough even at one generator per push
    tokens: list[str] = []

    def cmd(label: str, args: list[str], group: str, **kw: Any) -> Measure:
        log = tmp / "logs" / f"{len(results):02d}-{group}.log"
        return check(
            measure(label, [fs, *args], env=kw.pop("env", env), cwd=tmp, log=log, group=group), results
        )

    try:
        silos, schema, size = make_silos(tmp, n_silos, opts.frac, opts.seed)
        print(f"{n_silos} Adult silo(s) of {size} rows in {tmp}", flush=True)
        silo = str(silos[0])

        print("[1] fedsynth --help", flush=True)
        m = cmd("fedsynth --help", ["--help"], "cli")
        m.note = "interpreter + typer app, no numerical stack"

        print("[2] train-generators", flush=True)
        trained = []
        for fam in opts.families:
            out = tmp / "sets" / fam
            argv = ["train-generators", "--data", silo, "--target", TARGET, "--out", str(out),
                "--generator", fam, "--epsilon", "1", "--schema", str(schema)]  # fmt: skip
            m = cmd(
                f"train-generators --generator {fam}",
                argv,
                "train",
            )
            m.note = f"{size} rows, ε = 1; " + (last_line(m) if m.rc == 0 else "failed")
            if m.rc == 0:
                trained.append(out)

        print("[3] sample", flush=True)
        if "pgm" in opts.families and (tmp / "sets" / "pgm") in trained:
            argv = ["sample", "--generators", str(tmp / "sets" / "pgm"), "--rows", str(opts.rows),
                "--out", str(tmp / "sample-pgm.csv")]  # fmt: skip
            m = cmd(
                "sample (the silo's pgm set)",
                argv,
                "sample",
            )
            m.note = f"{opts.rows} rows; " + last_line(m).split(" to ")[0]
        if len(trained) > 1:
            gens = [a for p in trained for a in ("--generators", str(p))]
            m = cmd(
                f"sample ({len(trained)} families mixed)",
                ["sample", *gens, "--rows", str(opts.rows), "--out", str(tmp / "sample-mixed.csv")],
                "sample",
            )
            m.note = f"{opts.rows} rows; {', '.join(p.name for p in trained)}"

        print("[4] hub serve", flush=True)
        with hub_serve(fs, tmp, env) as hub:
            time.sleep(1.0)  # let the first request's lazy work finish before reading the RSS
            assert hub.sampler is not None
            hub.sampler.poll()
            rest = _status_kb(hub.proc.pid)
            tree = hub.sampler.tree()
            rest_mb = rest.get("VmRSS", 0) / 1024.0
            m = Measure(
                "hub serve: at rest (after GET /v1/health)",
                hub.proc.args if isinstance(hub.proc.args, list) else [],
                hub.healthy_s,
                rest.get("VmHWM", 0) / 1024.0,
                0,
                note=f"VmRSS {rest_mb:.0f} MB; wall = start → healthy; {len(tree)} process(es); "
                f"target ≤ {HUB_REST_TARGET_MB:.0f} MB",
                group="hub",
                extra={"VmRSS_mb": rest_mb, "VmHWM_mb": rest.get("VmHWM", 0) / 1024.0, "pids": tree},
            )
            check(m, results)
            admin_env = {**env, "FEDSYNTH_HUB_ADMIN_TOKEN": hub.admin_token}

            print("[5] create-federation", flush=True)
            argv = ["hub", "create-federation", "--hub", hub.url, "--name", FED, "--dataset", "adult",
                "--families", opts.pool_family, "--max-epsilon", "1.5", "--max-delta", "1e-5",
                "--silo-budget", "3.0"]  # fmt: skip
            m = cmd("hub create-federation (operator)", argv, "admin", env=admin_env)
            m.note = f"--dataset adult --families {opts.pool_family}"
            if m.rc:
                raise RuntimeError("create-federation failed")

            goal = "silo 0 only" if opts.skip_pool else f"until the pool holds {pool_target} generators"
            print(f"[6] add-silo + push ({goal})", flush=True)
            adds: list[Measure] = []
            pushes: list[Measure] = []
            pool = 0
            checkpoints = [] if opts.skip_pool else sorted({max(1, pool_target // 2), pool_target})
            for i, silo_csv in enumerate(silos):
                name = f"silo-{i:02d}"
                argv = [fs, "hub", "add-silo", "--hub", hub.url, "--federation", FED, "--name", name]
                log = tmp / "logs" / f"add-silo-{i:02d}.log"
                m = measure(f"hub add-silo {name}", argv, env=admin_env, cwd=tmp, log=log, group="admin")
                adds.append(m)
                if m.rc:
                    check(m, results)
                    raise RuntimeError("add-silo failed")
                token = token_of(log)
                tokens.append(token)
                argv = [fs, "push", "--hub", hub.url, "--token", token, "--data", str(silo_csv),
                    "--target", TARGET]  # fmt: skip
                log = tmp / "logs" / f"push-{i:02d}.log"
                m = measure(f"push {name}", argv, env=env, cwd=tmp, log=log, group="push")
                pushes.append(m)
                got = re.search(r"accepted: (\d+) generators", m.log_tail)
                pool += int(got.group(1)) if got and m.rc == 0 else 0
                if i == 0:
                    adds[0].label = "hub add-silo (operator)"
                    check(adds[0], results)
                    m.label = f"push (silo 0, {opts.pool_family}, to the hub)"
                    m.note = " ".join(last_line(m).split())[:100] if m.rc == 0 else "failed"
                    check(m, results)
                elif m.rc:
                    check(m, results)
                else:
                    print(f"  {m.label}: {m.wall_s:.2f} s, {m.peak_rss_mb:.0f} MB; pool {pool}", flush=True)
                if m.rc:
                    break
                while checkpoints and pool >= checkpoints[0]:
                    checkpoints.pop(0)
                    print(f"[7] pull of a {pool}-generator pool", flush=True)
                    argv = ["pull", "--hub", hub.url, "--token", tokens[0], "--rows", str(opts.rows),
                        "--out", str(tmp / f"pulled-{pool}.csv")]  # fmt: skip
                    m = cmd(f"pull --rows {opts.rows} ({pool}-generator pool, {i + 1} silos)", argv, "pull")
                    verdict = "ok" if m.peak_rss_mb <= PULL_TARGET_MB else "OVER"
                    said = re.search(r"from (\d+) generators of (\d+) silos.*?(\d+) bytes", flat(m))
                    got_s = f"{said[1]} generators, {int(said[3]) / 1e3:.0f} KB downloaded" if said else ""
                    m.note = f"target ≤ {PULL_TARGET_MB:.0f} MB: {verdict}; {got_s}"
                    m.extra["pool_generators"] = pool
                if opts.skip_pool or not checkpoints:
                    break
            if len(pushes) > 1:
                ok = [p for p in pushes[1:] if p.rc == 0]
                agg = Measure(
                    f"push (silos 1..{len(pushes) - 1}, median)",
                    pushes[1].args,
                    statistics.median(p.wall_s for p in ok) if ok else float("nan"),
                    statistics.median(p.peak_rss_mb for p in ok) if ok else float("nan"),
                    0 if len(ok) == len(pushes) - 1 else 1,
                    note=f"{len(ok)}/{len(pushes) - 1} ok; "
                    f"max {max((p.peak_rss_mb for p in ok), default=0):.0f} MB, "
                    f"{max((p.wall_s for p in ok), default=0):.1f} s",
                    group="push",
                    extra={"all": [(p.wall_s, p.peak_rss_mb, p.rc) for p in pushes]},
                )
                results.append(agg)
                print(f"  {agg.label}: {agg.wall_s:.2f} s, {agg.peak_rss_mb:.0f} MB; {agg.note}", flush=True)
                adds[0].extra["all"] = [(a.wall_s, a.peak_rss_mb) for a in adds]
            if checkpoints:
                note = f"the pool reached {pool} < {pool_target} generators after {len(pushes)} silos"
                check(
                    Measure("pull (pool not filled)", [], float("nan"), float("nan"), 1, note=note), results
                )
            check(stop_hub(hub, tmp / "logs" / "hub-serve.log"), results)

        if not opts.skip_flaim:
            print("[8] FLAIM client round (local Flower deployment)", flush=True)
            try:
                for m in flaim_round(tmp, env, opts.flaim_nodes, opts.flaim_method, opts.flaim_rounds):
                    check(m, results)
            except Exception as e:  # recorded, the rest of the bench stands
                check(Measure("FLAIM client round", [], float("nan"), float("nan"), 1, note=repr(e)), results)
    finally:
        total = time.perf_counter() - t_start
        if opts.keep_tmp:
            print(f"kept {tmp}", flush=True)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return {
        "benchmark": "silo_footprint",
        "dataset": "adult",
        "silo_rows": size,
        "silos_pushed": len(tokens),
        "pool_family": opts.pool_family,
        "pool_target": pool_target,
        "families": opts.families,
        "rows": opts.rows,
        "total_s": total,
        "load_avg_start": load0,
        "load_avg_end": os.getloadavg(),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "versions": _versions(),
        "git": _git(),
        "targets_mb": {"pull": PULL_TARGET_MB, "hub_at_rest": HUB_REST_TARGET_MB},
        "results": [asdict(m) for m in results],
    }


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("fedsynth", "flwr", "torch", "jax", "pandas", "numpy"):
        with contextlib.suppress(PackageNotFoundError):
            out[pkg] = version(pkg)
    return out


def _git() -> dict[str, str]:
    def git(*a: str) -> str:
        r = subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, check=False)
        return r.stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "dirty": git("status", "--short", "--", "src")}


def jsonable(v: Any) -> Any:
    """Strict JSON: NaN → null, paths → str, silo tokens (``fsk_…``, in argv and logs) redacted."""
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [jsonable(x) for x in v]
    if isinstance(v, float) and v != v:
        return None
    if isinstance(v, str):
        return re.sub(r"fs[ka]_[A-Za-z0-9_-]+", "fsk_<redacted>", v)
    if isinstance(v, int | float | bool) or v is None:
        return v
    return str(v)


def print_table(doc: dict[str, Any]) -> None:
    rows = []
    for r in doc["results"]:
        wall = "–" if r["wall_s"] != r["wall_s"] else f"{r['wall_s']:.2f}"
        rss = "–" if r["peak_rss_mb"] != r["peak_rss_mb"] else f"{r['peak_rss_mb']:.0f}"
        note = r["note"] if r["rc"] == 0 else f"FAILED (rc {r['rc']}) {r['note']}"
        rows.append((r["label"], wall, rss, note))
    title = (
        f"A silo's footprint (Adult, {doc['silo_rows']}-row silo; total {doc['total_s']:.0f} s, "
        f"load {doc['load_avg_start'][0]:.1f} → {doc['load_avg_end'][0]:.1f})"
    )
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(title)
        for r in rows:
            print(f"{r[0]:<58} {r[1]:>8} {r[2]:>7}  {r[3]}")
        return
    t = Table(title=title)
    t.add_column("command")
    t.add_column("wall s", justify="right")
    t.add_column("peak RSS MB", justify="right")
    t.add_column("note", overflow="fold")
    for r in rows:
        t.add_row(*r)
    Console(width=max(160, shutil.get_terminal_size().columns)).print(t)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--families", default=",".join(FAMILIES), help="comma-separated (default: %(default)s)")
    ap.add_argument("--skip-pool", action="store_true", help="push silo 0 only; no 40-generator pull")
    ap.add_argument("--skip-flaim", action="store_true", help="no Flower deployment")
    ap.add_argument("--pool-size", type=int, default=40, help="generators in the pulled pool")
    ap.add_argument("--pool-family", default="pgm", help="the federation's family (pgm: 1 joint model/silo)")
    ap.add_argument("--frac", type=float, default=0.05, help="a silo's share of Adult's training table")
    ap.add_argument("--rows", type=int, default=10_000, help="rows sampled by sample / pull")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--flaim-nodes", type=int, default=2, help="SuperNodes (FLAIM clients)")
    ap.add_argument("--flaim-method", default="flaim-sa")
    ap.add_argument("--flaim-rounds", type=int, default=1)
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (logs, sets, CSVs)")
    ap.add_argument("--json", type=Path, help="write the measurements here")
    opts = ap.parse_args(argv)
    opts.families = [f.strip() for f in opts.families.split(",") if f.strip()]
    doc = run(opts)
    print_table(doc)
    if opts.json:
        opts.json.parent.mkdir(parents=True, exist_ok=True)
        opts.json.write_text(json.dumps(jsonable(doc), indent=1, allow_nan=False))
        print(f"wrote {opts.json}")
    if any(r["rc"] for r in doc["results"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
