"""One-machine Flower deployment: a real SuperLink and SuperNodes on 127.0.0.1, optionally with TLS
and SuperNode authentication, and ``flwr run`` of an App against them.

Used by the slow deployment test and documented in ``docs/flower.md``. TLS material (a throw-away CA
and a server certificate for 127.0.0.1/localhost) and the SuperNodes' EC key pairs (OpenSSH format,
as ``flower-supernode --auth-supernode-private-key`` and ``flwr supernode register`` expect) are
generated with ``cryptography`` in well under a second. Processes are started in their own process
groups and stopped by those ids only.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

HOST = "127.0.0.1"


def _bin(name: str) -> str:
    path = Path(sys.executable).with_name(name)
    found = str(path) if path.exists() else shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} not found (is flwr installed in this environment?)")
    return found


def flwr_run(
    app_dir: Path,
    connection: str,
    run_config: str = "",
    *,
    env: dict[str, str] | None = None,
    timeout: float = 600.0,
) -> subprocess.CompletedProcess:
    """``flwr run APP CONNECTION --stream`` against any SuperLink named in ``$FLWR_HOME/config.toml``
    (blocks until the run ends)."""
    args = [_bin("flwr"), "run", str(app_dir), connection, "--stream"]
    if run_config:
        args += ["--run-config", run_config]
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def make_tls_material(folder: Path) -> dict[str, Path]:
    """Self-signed CA + server certificate valid for 127.0.0.1 and localhost (testing only)."""
    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedsynth test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA384())
    )
    key = ec.generate_private_key(ec.SECP384R1())
    san = x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))])
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(san, critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA384())
    )
    paths = {"ca": folder / "ca.crt", "cert": folder / "server.pem", "key": folder / "server.key"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    os.chmod(paths["key"], 0o600)
    return paths


def make_node_key(folder: Path, name: str) -> tuple[Path, Path]:
    """EC (P-384) key pair in OpenSSH format for SuperNode authentication."""
    folder.mkdir(parents=True, exist_ok=True)
    sk = ec.generate_private_key(ec.SECP384R1())
    priv, pub = folder / name, folder / f"{name}.pub"
    priv.write_bytes(
        sk.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )
    )
    os.chmod(priv, 0o600)
    pub.write_bytes(
        sk.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    )
    return priv, pub


@dataclass
class LocalDeployment:
    """SuperLink + ``num_nodes`` SuperNodes on 127.0.0.1 (``with`` block; processes stopped on exit)."""

    workdir: Path
    num_nodes: int
    tls: bool = True
    node_auth: bool = True
    connection: str = "fedsynth-local"
    # extra ``--node-config`` entries per node (e.g. "data-path=/silo3.csv"), appended to its ids
    node_configs: list[str] | None = None
    procs: list[subprocess.Popen] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        self.home = self.workdir / "flwr_home"  # FLWR_HOME: connection config + installed apps
        self.logs = self.workdir / "logs"
        self.port = free_port()
        self.env = {**os.environ, "FLWR_HOME": str(self.home), "PYTHONUNBUFFERED": "1"}

    # -- process helpers
    def _start(self, name: str, args: list[str]) -> subprocess.Popen:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - kept open for the process lifetime
        p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        self.procs.append(p)
        return p

    def _wait_port(self, port: int, timeout: float = 60.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with socket.socket() as s:
                if s.connect_ex((HOST, port)) == 0:
                    return
            if any(p.poll() is not None for p in self.procs):
                raise RuntimeError(f"a Flower process exited early; see {self.logs}")
            time.sleep(0.3)
        raise TimeoutError(f"port {port} did not open within {timeout:.0f} s")

    def flwr(self, *args: str, timeout: float = 300.0) -> subprocess.CompletedProcess:
        return subprocess.run(
            [_bin("flwr"), *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )

    # -- lifecycle
    def __enter__(self) -> LocalDeployment:
        self.home.mkdir(parents=True, exist_ok=True)
        link = [
            _bin("flower-superlink"),
            "--port",
            str(self.port),
            "--disable-runtime-dependency-installation",
        ]
        if self.tls:
            self.tls_files = make_tls_material(self.workdir / "certs")
            link += [
                "--ssl-ca-certfile", str(self.tls_files["ca"]),
                "--ssl-certfile", str(self.tls_files["cert"]),
                "--ssl-keyfile", str(self.tls_files["key"]),
            ]  # fmt: skip
        else:
            link.append("--insecure")
        if self.node_auth:
            link.append("--enable-supernode-auth")
        self._write_connection()
        self._start("superlink", link)
        self._wait_port(self.port)
        for i in range(self.num_nodes):
            node = [
                _bin("flower-supernode"),
                "--superlink", f"{HOST}:{self.port}",
                "--port", str(free_port()),
                "--node-config", f"partition-id={i} num-partitions={self.num_nodes}"
                + (f" {self.node_configs[i]}" if self.node_configs else ""),
            ]  # fmt: skip
            node += ["--root-certificates", str(self.tls_files["ca"])] if self.tls else ["--insecure"]
            if self.node_auth:
                priv, pub = make_node_key(self.workdir / "keys", f"node{i}")
                res = self.flwr("supernode", "register", str(pub), self.connection, timeout=60)
                if res.returncode != 0:
                    raise RuntimeError(f"flwr supernode register failed: {res.stdout}\n{res.stderr}")
                node += ["--auth-supernode-private-key", str(priv)]
            self._start(f"supernode{i}", node)
        return self

    def _write_connection(self) -> None:
        lines = [
            "[superlink]",
            f'default = "{self.connection}"',
            "",
            f"[superlink.{self.connection}]",
            f'address = "{HOST}:{self.port}"',
        ]
        if self.tls:
            lines.append(f'root-certificates = "{self.workdir / "certs" / "ca.crt"}"')
        else:
            lines.append("insecure = true")
        (self.home / "config.toml").write_text("\n".join(lines) + "\n")

    def run_app(
        self, app_dir: Path, run_config: str = "", timeout: float = 600.0
    ) -> subprocess.CompletedProcess:
        """``flwr run APP CONNECTION --stream`` (blocks until the run ends)."""
        return flwr_run(app_dir, self.connection, run_config, env=self.env, timeout=timeout)

    def __exit__(self, *exc: object) -> None:
        for p in reversed(self.procs):  # our own process groups only
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=5)


APP_PYPROJECT = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "{name}"
version = "1.0.0"
description = "fedsynth Flower App (code lives in the installed fedsynth package)"
license = "Apache-2.0"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "fedsynth"

[tool.flwr.app.components]
serverapp = "{serverapp}"
clientapp = "{clientapp}"

[tool.flwr.app.config]
{config}
"""


def write_app(folder: Path, serverapp: str, clientapp: str, config: dict[str, object], name: str) -> Path:
    """A minimal Flower App folder whose components point into the installed ``fedsynth`` package."""
    folder.mkdir(parents=True, exist_ok=True)

    def toml(v: object) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        # a JSON string literal is a valid TOML basic string (quotes and backslashes escaped)
        return json.dumps(v) if isinstance(v, str) else str(v)

    cfg = "\n".join(f"{k} = {toml(v)}" for k, v in config.items())
    (folder / "pyproject.toml").write_text(
        APP_PYPROJECT.format(name=name, serverapp=serverapp, clientapp=clientapp, config=cfg)
    )
    return folder
