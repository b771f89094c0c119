"""The hub CLI end to end: ``fedsynth hub serve`` (plain and TLS), ``hub create-federation``,
``hub add-silo``, ``fedsynth push`` (real DP training, tiny) and ``fedsynth pull``."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest
from typer.testing import CliRunner

from fedsynth.cli import app
from fedsynth.exchange.client import HubAdmin
from fedsynth.exchange.process import run_hub
from tests.conftest_hub import tiny_schema, tiny_table

runner = CliRunner()


def _ok(res) -> str:  # type: ignore[no-untyped-def]
    assert res.exit_code == 0, res.output
    return str(res.output)


def test_cli_push_pull_through_real_hub(tmp_path: Path) -> None:
    schema_file = tmp_path / "schema.json"
    schema_file.write_text(tiny_schema().to_json())
    data = tmp_path / "silo.csv"
    tiny_table(300, 0).to_csv(data, index=False)
    with run_hub(f"sqlite:///{tmp_path / 'hub.db'}", tmp_path / "store") as hub:
        env = {"FEDSYNTH_HUB_ADMIN_TOKEN": hub.admin_token}
        _ok(
            runner.invoke(
                app,
                [
                    "hub",
                    "create-federation",
                    "--hub",
                    hub.url,
                    "--name",
                    "clinics",
                    "--schema",
                    str(schema_file),
                    "--max-epsilon",
                    "1.5",
                    "--max-delta",
                    "1e-4",
                    "--silo-budget",
                    "2.0",
                    "--families",
                    "vae,pgm",
                    "--latent-dim",
                    "4",
                    "--hidden",
                    "16",
                ],
                env=env,
            )
        )
        res = runner.invoke(
            app, ["hub", "add-silo", "--hub", hub.url, "--federation", "clinics", "--name", "s1"], env=env
        )
        token = _ok(res).strip().splitlines()[-1].strip()
        assert token.startswith("fsk_")
        push = [
            "push",
            "--hub",
            hub.url,
            "--token",
            token,
            "--data",
            str(data),
            "--target",
            "y",
            "--epochs",
            "1",
            "--max-steps",
            "20",
        ]
        out = _ok(runner.invoke(app, push))
        assert "accepted: 2 generators" in out
        pool = HubAdmin(hub.url, hub.admin_token).pool("clinics")
        assert len(pool) == 2 and all(0 < e.epsilon <= 1.0 + 1e-6 and e.delta <= 1e-4 for e in pool)

        # bad input: each refused with a message and exit code 2, nothing pushed
        for args, msg in (
            (["--epsilon", "2.0"], "exceeds the federation's cap"),
            (["--epsilon", "1.5"], "left of its budget"),  # 1.0 spent of 2.0
        ):
            res = runner.invoke(app, [*push, *args])
            assert res.exit_code == 2 and msg in res.output, res.output
        res = runner.invoke(app, [*push[:-6], "--target", "color"])
        assert res.exit_code == 2 and "target" in res.output
        bad = tmp_path / "bad.csv"
        tiny_table(50, 1).assign(color="purple").to_csv(bad, index=False)
        res = runner.invoke(
            app, ["push", "--hub", hub.url, "--token", token, "--data", str(bad), "--target", "y"]
        )
        assert res.exit_code == 2 and "purple" in res.output
        res = runner.invoke(app, [*push[:3], "--token", "fsk_wrong", *push[5:]])
        assert res.exit_code == 2 and "401" in res.output
        assert len(HubAdmin(hub.url, hub.admin_token).pool("clinics")) == 2

        out_csv = tmp_path / "synthetic.csv"
        out = _ok(
            runner.invoke(
                app, ["pull", "--hub", hub.url, "--token", token, "--rows", "200", "--out", str(out_csv)]
            )
        )
        assert "2 generators of 1 silos" in " ".join(out.split())
        df = pd.read_csv(out_csv)
        assert len(df) == 200 and set(df.columns) == {"age", "color", "y"} and set(df["y"]) == {"no", "yes"}
        res = runner.invoke(
            app, ["pull", "--hub", hub.url, "--token", token, "--rows", "5", "--out", str(out_csv)]
        )
        assert res.exit_code == 2 and "already exists" in res.output
        res = runner.invoke(
            app,
            [
                "pull",
                "--hub",
                hub.url,
                "--token",
                token,
                "--rows",
                "5",
                "--out",
                str(tmp_path / "x.csv"),
                "--exclude-silo",
                "s1",
            ],
        )
        assert res.exit_code == 2 and "no generators" in res.output and not (tmp_path / "x.csv").exists()
        # pull-time screening against the silo's own rows: reported, and sampling still works
        screened = tmp_path / "screened.csv"
        args = ["pull", "--hub", hub.url, "--token", token, "--rows", "50", "--out", str(screened)]
        out = _ok(runner.invoke(app, [*args, "--screen-data", str(data)]))
        assert "pool screen" in out and len(pd.read_csv(screened)) == 50
        # a second silo pushes the federation's other family; one pull samples the mixed pool
        res = runner.invoke(
            app, ["hub", "add-silo", "--hub", hub.url, "--federation", "clinics", "--name", "s2"], env=env
        )
        token2 = _ok(res).strip().splitlines()[-1].strip()
        out = _ok(runner.invoke(app, [*push[:3], "--token", token2, *push[5:-4], "--generator", "pgm"]))
        assert "accepted: 1 generators" in out and "pgm/1" in out
        res = runner.invoke(app, [*push[:3], "--token", token2, *push[5:-4], "--generator", "gan"])
        assert res.exit_code == 2 and "does not accept family" in res.output
        pool = HubAdmin(hub.url, hub.admin_token).pool("clinics")
        assert sorted(e.family for e in pool) == ["dp-vae/1", "dp-vae/1", "pgm/1"]
        mixed = tmp_path / "mixed.csv"
        args = ["pull", "--hub", hub.url, "--token", token2, "--rows", "300", "--out", str(mixed)]
        assert "3 generators of 2 silos" in " ".join(_ok(runner.invoke(app, args)).split())
        assert set(pd.read_csv(mixed)["y"]) == {"no", "yes"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("tls", [pytest.param(False, marks=pytest.mark.slow), True])
def test_cli_hub_serve(tmp_path: Path, tls: bool) -> None:
    port = _free_port()
    cmd = [
        sys.executable,
        "-c",
        "from fedsynth.cli import app; app()",
        "hub",
        "serve",
        "--db",
        f"sqlite:///{tmp_path / 'h.db'}",
        "--store",
        str(tmp_path / "store"),
        "--port",
        str(port),
    ]
    verify: bool | str = True
    if tls:
        if not shutil.which("openssl"):
            pytest.skip("openssl not available to make a test certificate")
        cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                str(key),
                "-out",
                str(cert),
                "-days",
                "1",
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
            ],
            check=True,
            capture_output=True,
        )
        cmd += ["--tls-cert", str(cert), "--tls-key", str(key)]
        verify = str(cert)
    admin = "fsa_" + "x" * 30
    proc = subprocess.Popen(
        cmd,
        env={**os.environ, "FEDSYNTH_HUB_ADMIN_TOKEN": admin},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{url}/v1/health", verify=verify, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            proc.kill()
            raise AssertionError(
                "hub serve did not come up: " + proc.communicate()[0].decode(errors="replace")
            )
        with HubAdmin(url, admin, verify=verify) as adm:
            assert adm.federations() == []
        if tls:  # a client that does not trust the certificate refuses to talk
            with pytest.raises(httpx.HTTPError):
                httpx.get(f"{url}/v1/health", timeout=2)
    finally:
        proc.terminate()
        proc.wait(10)
    assert json.loads(json.dumps({"ok": True}))
