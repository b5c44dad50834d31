"""A goal pod's credentials, read without the official Kubernetes client."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from overseer.kubeconfig import CredentialsError, pod_credentials


def kubeconfig(path: Path, user: dict[str, object], cluster: dict[str, object] | None = None) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "pod",
        "clusters": [{"name": "local", "cluster": cluster or {"server": "https://127.0.0.1:6443",
                                                               "certificate-authority": "pki/ca.crt"}}],
        "users": [{"name": "agent", "user": user}],
        "contexts": [{"name": "pod", "context": {"cluster": "local", "user": "agent", "namespace": "team-a"}}],
    }))
    return path


def test_a_kubeconfig_with_a_token_names_server_ca_and_token(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "config", {"token": "abc"})
    creds = pod_credentials({"KUBECONFIG": str(path)})
    assert (creds.server, creds.token, creds.scheme) == ("https://127.0.0.1:6443", "abc", "Bearer")
    assert creds.ca_path == str(tmp_path / "pki" / "ca.crt"), "relative to the kubeconfig's folder"


def test_a_token_file_is_read(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("from-file\n")
    creds = pod_credentials({"KUBECONFIG": str(kubeconfig(tmp_path / "config", {"tokenFile": "token"}))})
    assert creds.token == "from-file"


def test_in_a_pod_the_service_account_is_used(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("sa-token")
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    creds = pod_credentials(env, service_account=tmp_path)
    assert (creds.server, creds.token, creds.ca_path) == ("https://10.96.0.1:443", "sa-token", str(tmp_path / "ca.crt"))


def test_an_exec_plugin_is_refused_with_what_to_use_instead(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "config", {"exec": {"command": "aws"}})
    with pytest.raises(CredentialsError, match="uses 'exec'.*token or a client certificate"):
        pod_credentials({"KUBECONFIG": str(path)})


def test_no_credentials_at_all_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError, match="KUBECONFIG is not set.*KUBERNETES_SERVICE_HOST"):
        pod_credentials({}, service_account=tmp_path)
