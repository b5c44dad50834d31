"""Where goal pods reach the API server: configured CIDRs, else the kubernetes Service's
EndpointSlices as the API server publishes them."""

from __future__ import annotations

from typing import Any

from overseer.operator.agents import api_server_condition
from overseer.operator.api_server import APIServerEgress, api_server_egress, from_slices
from overseer.operator.settings import Settings


def endpoint_slice(*addresses: str, port: int = 6443, address_type: str = "IPv4", ready: bool | None = True,
                   protocol: str = "TCP") -> dict[str, Any]:
    conditions = {} if ready is None else {"ready": ready}
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": address_type,
            "metadata": {"name": "kubernetes", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "kubernetes"}},
            "endpoints": [{"addresses": [a], "conditions": conditions} for a in addresses],
            "ports": [{"name": "https", "port": port, "protocol": protocol}]}


def test_each_api_server_address_becomes_a_host_cidr_with_the_slice_port():
    found = from_slices([endpoint_slice("172.18.0.3", "172.18.0.2")])

    assert found == APIServerEgress(("172.18.0.2/32", "172.18.0.3/32"), (6443,), "EndpointSlice default/kubernetes")


def test_ipv4_and_ipv6_slices_of_a_dual_stack_cluster_are_merged():
    found = from_slices([endpoint_slice("fd00::10", address_type="IPv6", port=443), endpoint_slice("10.0.0.5")])

    assert found is not None
    assert found.cidrs == ("10.0.0.5/32", "fd00::10/128") and found.ports == (443, 6443)


def test_endpoints_that_are_not_ready_are_left_out_but_unknown_readiness_counts():
    found = from_slices([endpoint_slice("10.0.0.5", ready=False), endpoint_slice("10.0.0.6", ready=None)])

    assert found is not None and found.cidrs == ("10.0.0.6/32",)


def test_no_slice_or_no_usable_endpoint_means_unknown():
    assert from_slices([]) is None
    assert from_slices([endpoint_slice("10.0.0.5", ready=False)]) is None
    assert from_slices([endpoint_slice("api.example.com", address_type="FQDN")]) is None
    assert from_slices([endpoint_slice("10.0.0.5", protocol="UDP")]) is None


def test_configured_cidrs_win_over_the_slices(clean_env):
    settings = Settings(api_server_cidrs=["10.96.0.1/32"], api_server_ports=[443])

    found = api_server_egress(settings, [endpoint_slice("172.18.0.2")])

    assert found == APIServerEgress(("10.96.0.1/32",), (443,), "OVERSEER_API_SERVER_CIDRS")


def test_without_cidrs_the_slices_decide(settings):
    assert api_server_egress(settings, [endpoint_slice("172.18.0.2")]).cidrs == ("172.18.0.2/32",)
    assert api_server_egress(settings, []) is None


def test_an_agent_says_when_its_pods_have_no_way_to_the_api_server(make_agent):
    ok, reason, message = api_server_condition(make_agent("coder"), None)

    assert (ok, reason) == (False, "APIServerAddressUnknown")
    assert "OVERSEER_API_SERVER_CIDRS is unset" in message and "EndpointSlice default/kubernetes" in message
    assert "NetworkPolicy overseer-agent-coder" in message


def test_an_agent_names_the_api_server_addresses_its_pods_may_reach(make_agent):
    found = from_slices([endpoint_slice("172.18.0.2")])

    assert api_server_condition(make_agent(), found) == (
        True, "Allowed", "goal pods may reach the API server at 172.18.0.2/32 port 6443 (from EndpointSlice "
                         "default/kubernetes)")
