"""Which flows the live cluster's NetworkPolicies allow, as cyclonus's policy engine answers
(`overseer-health netpol`, e2e/tools/health/netpol.go): not our code judging our policies.
Nothing is sent: the objects are read from the API server and evaluated."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from e2e import health


@dataclass(frozen=True)
class Flow:
    """From a pod ("namespace/name") or an address, to a pod or an address, on a port."""

    name: str
    source: str
    destination: str
    port: int
    protocol: str = "TCP"

    def to_input(self) -> dict[str, Any]:
        def end(text: str) -> dict[str, str]:
            return {"pod": text} if "/" in text else {"ip": text}
        return {"name": self.name, "from": end(self.source), "to": end(self.destination), "port": self.port,
                "protocol": self.protocol}


def verdicts(kubectl: Any, flows: list[Flow]) -> dict[str, bool]:
    """Flow name -> allowed, for the NetworkPolicies, Namespaces and Pods the API server holds now."""
    def listed(*what: str) -> dict[str, Any]:
        return json.loads(kubectl("get", *what, "-o", "json").stdout)
    document = {"networkPolicies": listed("networkpolicies", "-A"), "namespaces": listed("namespaces"),
                "pods": listed("pods", "-A"), "flows": [f.to_input() for f in flows]}
    proc = health.run("netpol", input=json.dumps(document))
    if proc.returncode != 0:
        raise AssertionError(f"overseer-health netpol failed: {proc.stderr}")
    return {v["name"]: v["allowed"] for v in json.loads(proc.stdout)}
