"""A goal pod's credentials without the official Kubernetes client (importing it costs half a
second of CPU at every goal's start): the pod's ServiceAccount, or the kubeconfig named by
$KUBECONFIG when one is given (as the e2e harness does for agents it runs outside a pod).

Only what such a kubeconfig holds is understood: a server, its CA, and a token, a token file, a
client certificate or a user name and password. Exec plugins and auth providers are the official
client's job (overseer.kube.load_credentials, which the CLI uses).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from overseer.kube import StaticCredentials

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class CredentialsError(Exception):
    """No usable credentials: says where it looked and what to change."""


def pod_credentials(env: Mapping[str, str] = os.environ, service_account: Path = SERVICE_ACCOUNT) -> StaticCredentials:
    """$KUBECONFIG's current context if set, else the pod's ServiceAccount (read afresh each call:
    the kubelet rotates the token)."""
    if env.get("KUBECONFIG"):
        return from_kubeconfig(Path(env["KUBECONFIG"].split(os.pathsep)[0]))
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
    token = service_account / "token"
    if not host or not port or not token.is_file():
        raise CredentialsError("no credentials: KUBECONFIG is not set, and this is not a pod with a ServiceAccount "
                               f"token ({token}) and KUBERNETES_SERVICE_HOST/PORT")
    server = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
    return StaticCredentials(server=server, ca_path=str(service_account / "ca.crt"),
                             token=token.read_text().strip(), scheme="Bearer")


def from_kubeconfig(path: Path) -> StaticCredentials:
    import yaml  # only here: a pod's own credentials need no YAML

    try:
        config: dict[str, Any] = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise CredentialsError(f"KUBECONFIG {path}: cannot be read: {e}") from None
    base = path.parent
    context_name = config.get("current-context")
    context = _named(config, "contexts", context_name, path).get("context") or {}
    cluster = _named(config, "clusters", context.get("cluster"), path).get("cluster") or {}
    user = _named(config, "users", context.get("user"), path).get("user") or {}
    for unsupported in ("exec", "auth-provider"):
        if unsupported in user:
            raise CredentialsError(f"KUBECONFIG {path}: user {context.get('user')!r} uses {unsupported!r}, which a "
                                   f"goal pod does not support; give it a token or a client certificate")
    if not cluster.get("server"):
        raise CredentialsError(f"KUBECONFIG {path}: cluster {context.get('cluster')!r} has no server")
    token = user.get("token")
    if not token and user.get("tokenFile"):
        token = _path(base, user["tokenFile"]).read_text().strip()
    return StaticCredentials(
        server=cluster["server"], ca_path=_file(base, cluster.get("certificate-authority")),
        ca_data=cluster.get("certificate-authority-data"), insecure=bool(cluster.get("insecure-skip-tls-verify")),
        token=token, scheme="Bearer" if token else None,
        certificate_path=_file(base, user.get("client-certificate")),
        certificate_data=user.get("client-certificate-data"),
        private_key_path=_file(base, user.get("client-key")), private_key_data=user.get("client-key-data"),
        username=user.get("username"), password=user.get("password"))


def _named(config: Mapping[str, Any], section: str, name: str | None, path: Path) -> Mapping[str, Any]:
    entries = config.get(section) or []
    found = next((e for e in entries if e.get("name") == name), None)
    if found is None:
        raise CredentialsError(f"KUBECONFIG {path}: {section} has no entry named {name!r} "
                               f"(current-context {config.get('current-context')!r})")
    return found


def _path(base: Path, value: str) -> Path:
    return Path(value) if os.path.isabs(value) else base / value


def _file(base: Path, value: str | None) -> str | None:
    return str(_path(base, value)) if value else None
