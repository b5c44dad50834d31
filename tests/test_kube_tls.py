"""The API server's CA is the only one a Kube client trusts when its credentials name one."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from overseer.kube import ssl_context


def credentials(**fields: object) -> SimpleNamespace:
    base = dict(server="https://127.0.0.1:6443", ca_path=None, ca_data=None, insecure=False, username=None,
                password=None, scheme="Bearer", token="t", certificate_path=None, certificate_data=None,
                private_key_path=None, private_key_data=None)
    return SimpleNamespace(**{**base, **fields})


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ca")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=cluster-ca",
                    "-keyout", str(folder / "ca.key"), "-out", str(folder / "ca.crt")], check=True, capture_output=True)
    return folder / "ca.crt"


@pytest.mark.parametrize("given", ["path", "pem", "base64"])
def test_the_cluster_ca_alone_is_trusted(ca: Path, given: str) -> None:
    pem = ca.read_text()
    fields = {"path": {"ca_path": ca}, "pem": {"ca_data": pem},
              "base64": {"ca_data": base64.b64encode(pem.encode()).decode()}}[given]
    ctx = ssl_context(credentials(**fields))  # type: ignore[arg-type]
    assert not isinstance(ctx, bool)
    subjects = [dict(x[0] for x in cert["subject"]) for cert in ctx.get_ca_certs()]
    assert subjects == [{"commonName": "cluster-ca"}], "a public CA's certificate would pass for the API server"
    assert ctx.cert_store_stats()["x509_ca"] == 1


def test_without_a_ca_the_systems_store_is_used_and_insecure_means_no_verification() -> None:
    ctx = ssl_context(credentials())  # type: ignore[arg-type]
    assert not isinstance(ctx, bool) and ctx.check_hostname
    assert ssl_context(credentials(insecure=True)) is False  # type: ignore[arg-type]
