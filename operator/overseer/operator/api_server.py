"""Where goal pods reach the Kubernetes API server, for their NetworkPolicy.

A NetworkPolicy sees traffic after the Service's virtual IP is translated, so it must allow the
API server's real addresses and ports: OVERSEER_API_SERVER_CIDRS when set, else the endpoints
the API server itself publishes in the EndpointSlice(s) of Service default/kubernetes.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from .settings import Settings

SLICES_API_VERSION = "discovery.k8s.io/v1"
SLICES_NAMESPACE = "default"
SLICES_SELECTOR = "kubernetes.io/service-name=kubernetes"
SLICES_SOURCE = f"EndpointSlice {SLICES_NAMESPACE}/kubernetes"


@dataclass(frozen=True)
class APIServerEgress:
    cidrs: tuple[str, ...]
    ports: tuple[int, ...]
    source: str  # where they came from, for conditions and logs

    def describe(self) -> str:
        return f"{', '.join(self.cidrs)} port {', '.join(map(str, self.ports))} (from {self.source})"


def _host_cidr(address: str) -> str:
    ip = ipaddress.ip_address(address)
    return f"{ip}/{ip.max_prefixlen}"


def from_slices(slices: list[dict[str, Any]]) -> APIServerEgress | None:
    """The ready endpoints and TCP ports of the kubernetes Service's EndpointSlices; None when
    they name none (no slice, or the API server publishes no endpoint)."""
    cidrs: set[str] = set()
    ports: set[int] = set()
    for s in slices:
        if s.get("addressType") not in ("IPv4", "IPv6"):
            continue  # FQDN slices: a NetworkPolicy cannot match a host name
        ready = [e for e in s.get("endpoints") or [] if (e.get("conditions") or {}).get("ready") is not False]
        slice_ports = {p["port"] for p in s.get("ports") or [] if p.get("port") and p.get("protocol", "TCP") == "TCP"}
        if ready and slice_ports:
            cidrs.update(_host_cidr(a) for e in ready for a in e.get("addresses") or [])
            ports.update(slice_ports)
    if not cidrs:
        return None
    nets = sorted((ipaddress.ip_network(c) for c in cidrs), key=lambda n: (n.version, n))
    return APIServerEgress(tuple(map(str, nets)), tuple(sorted(ports)), SLICES_SOURCE)


def api_server_egress(settings: Settings, slices: list[dict[str, Any]]) -> APIServerEgress | None:
    """The configured addresses when there are any, else those of the EndpointSlices."""
    if settings.api_server_cidrs:
        return APIServerEgress(tuple(settings.api_server_cidrs), tuple(settings.api_server_ports),
                               "OVERSEER_API_SERVER_CIDRS")
    return from_slices(slices)
