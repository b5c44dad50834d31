"""What an Agent implies in its namespace: ServiceAccount, Role, RoleBinding, NetworkPolicy, ResourceQuota."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from overseer.api import GROUP
from overseer.operator.agent_resources import (
    child_name,
    model_egress_condition,
    service_egress_condition,
    render_network_policy,
    render_resource_quota,
    render_role,
    render_role_binding,
    render_service_account,
)
from overseer.operator.api_server import api_server_egress
from overseer.operator.settings import ServiceEgress, Settings

PRIVATE_RANGES = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
ARGO_LABEL = "app.kubernetes.io/instance"


def rules_for(role: dict[str, Any], resource: str) -> list[dict[str, Any]]:
    return [r for r in role["rules"] if resource in r["resources"]]


def verbs_on(role: dict[str, Any], resource: str) -> set[str]:
    return {v for r in rules_for(role, resource) for v in r["verbs"]}


def all_children(agent, caps, settings) -> list[dict[str, Any]]:
    return [render_service_account(agent), render_role(agent), render_role_binding(agent),
            render_network_policy(agent, caps, settings), render_resource_quota(agent)]


def egress_peers(policy: dict[str, Any]) -> list[dict[str, Any]]:
    return [peer for rule in policy["spec"]["egress"] for peer in rule.get("to", [])]


def rule_reaching(policy: dict[str, Any], cidr: str) -> dict[str, Any]:
    return next(rule for rule in policy["spec"]["egress"]
                if any(peer.get("ipBlock", {}).get("cidr") == cidr for peer in rule.get("to", [])))


# --- Role ----------------------------------------------------------------------------------


def test_role_lets_the_agent_read_and_create_goals_but_never_change_them(make_agent):
    role = render_role(make_agent())

    assert verbs_on(role, "goals") == {"get", "list", "watch", "create"}
    for verb in ("update", "patch", "delete", "deletecollection", "*"):
        assert verb not in verbs_on(role, "goals"), f"an agent with {verb} on goals could approve itself"


def test_role_lets_the_agent_report_on_goal_status_by_patch_only(make_agent):
    role = render_role(make_agent())

    assert verbs_on(role, "goals/status") == {"get", "patch"}


def test_role_reads_only_the_agents_own_agent_object(make_agent):
    role = render_role(make_agent("coder"))

    [rule] = rules_for(role, "agents")
    assert rule["resourceNames"] == ["coder"]
    assert rule["verbs"] == ["get"]


def test_role_reads_only_the_capabilities_the_agent_lists(make_agent):
    role = render_role(make_agent(capabilities=["pytest", "git", "pytest"]))

    [rule] = rules_for(role, "capabilities")
    assert rule["resourceNames"] == ["git", "pytest"]
    assert rule["verbs"] == ["get"]


def test_role_reads_what_the_listed_capabilities_require_too(make_agent):
    role = render_role(make_agent(capabilities=["lint"]), ["lint", "fmt", "parser"])

    [rule] = rules_for(role, "capabilities")
    assert rule["resourceNames"] == ["fmt", "lint", "parser"]


def test_role_grants_no_capabilities_to_an_agent_without_any(make_agent):
    # An empty resourceNames list would mean "all capabilities", so there must be no rule at all.
    role = render_role(make_agent(capabilities=[]))

    assert rules_for(role, "capabilities") == []


def test_role_reads_only_the_agents_own_modifications_config_map(make_agent):
    role = render_role(make_agent("coder"))

    [rule] = rules_for(role, "configmaps")
    assert rule["resourceNames"] == ["overseer-agent-coder-modifications"]
    assert rule["verbs"] == ["get"], "an agent that could write its modifications could approve a change to itself"


def test_role_grants_only_overseer_resources_events_and_its_modifications(make_agent):
    role = render_role(make_agent(capabilities=["git"]))

    granted = {(group, resource) for r in role["rules"] for group in r["apiGroups"] for resource in r["resources"]}
    assert granted == {
        (GROUP, "agents"), (GROUP, "capabilities"), (GROUP, "goals"), (GROUP, "goals/status"),
        ("", "events"), ("events.k8s.io", "events"), ("", "configmaps"),
    }
    assert verbs_on(role, "events") == {"create"}
    for forbidden in ("secrets", "pods", "pods/exec", "serviceaccounts", "roles", "rolebindings", "*"):
        assert rules_for(role, forbidden) == []
    assert all("*" not in r["verbs"] and "*" not in r["apiGroups"] for r in role["rules"])


def test_role_binding_binds_the_agents_role_to_the_agents_service_account(make_agent):
    agent = make_agent("coder", namespace="team-a")
    account, role, binding = render_service_account(agent), render_role(agent), render_role_binding(agent)

    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"],
                                    "namespace": "team-a"}]


# --- what every child shares ------------------------------------------------------------------


def test_every_child_is_owned_by_its_agent(make_agent, make_capability, settings):
    agent = make_agent("coder", quota={"pods": 4})

    for child in all_children(agent, [make_capability()], settings):
        assert child["metadata"]["ownerReferences"] == [{
            "apiVersion": "overseer.dev/v1alpha1", "kind": "Agent", "name": "coder",
            "uid": agent.metadata["uid"], "controller": True, "blockOwnerDeletion": True,
        }], child["kind"]


def test_every_child_lives_in_the_agents_namespace_under_one_name(make_agent, settings):
    agent = make_agent("coder", namespace="team-b", quota={"pods": 4})

    for child in all_children(agent, [], settings):
        assert child["metadata"]["namespace"] == "team-b", child["kind"]
        assert child["metadata"]["name"] == child_name("coder") == "overseer-agent-coder", child["kind"]


def test_children_carry_only_the_projects_labels(make_agent, settings):
    # Argo CD tracks what it applied by a label; copied onto the children, it would make Argo CD
    # prune them as strays of the application.
    agent = make_agent("coder", labels={ARGO_LABEL: "team-a-agents", "team": "a"}, quota={"pods": 4})

    for child in all_children(agent, [], settings):
        assert child["metadata"]["labels"] == {
            "overseer.dev/agent": "coder", "app.kubernetes.io/managed-by": "overseer",
        }, child["kind"]


def test_renderers_are_deterministic(make_agent, make_capability, settings):
    def render() -> list[dict[str, Any]]:
        agent = make_agent(capabilities=["pytest", "git"], quota={"pods": 4, "requests.cpu": "2"})
        caps = [make_capability("pytest", egress=[{"cidr": "10.1.0.0/16", "ports": [443]}]),
                make_capability("git", egress=[{"cidr": "140.82.112.0/20", "ports": [22, 443]}])]
        return all_children(agent, caps, settings)

    assert render() == render()


def test_network_policy_does_not_depend_on_the_order_capabilities_come_in(make_agent, make_capability, settings):
    agent = make_agent(capabilities=["pytest", "git"])
    pytest_cap = make_capability("pytest", egress=[{"cidr": "10.1.0.0/16"}])
    git_cap = make_capability("git", egress=[{"cidr": "140.82.112.0/20"}])

    assert (render_network_policy(agent, [pytest_cap, git_cap], settings)
            == render_network_policy(agent, [git_cap, pytest_cap], settings))


# --- NetworkPolicy ------------------------------------------------------------------------------


def test_network_policy_selects_the_agents_pods_and_denies_both_ways_by_default(make_agent, settings):
    spec = render_network_policy(make_agent("coder"), [], settings)["spec"]

    assert spec["podSelector"] == {"matchLabels": {"overseer.dev/agent": "coder"}}
    assert sorted(spec["policyTypes"]) == ["Egress", "Ingress"]
    # No monitoring namespace configured: nothing may connect to goal pods.
    assert spec["ingress"] == []


def test_only_the_monitoring_namespace_reaches_the_metrics_port(make_agent, clean_env):
    settings = Settings(monitoring_namespace="monitoring", monitoring_pod_labels={"app": "prometheus"})

    spec = render_network_policy(make_agent(), [], settings)["spec"]

    assert spec["ingress"] == [{
        "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                  "podSelector": {"matchLabels": {"app": "prometheus"}}}],
        "ports": [{"protocol": "TCP", "port": settings.agent_metrics_port}],
    }]


def test_network_policy_allows_dns_to_the_cluster_dns_pods(make_agent, settings):
    egress = render_network_policy(make_agent(), [], settings)["spec"]["egress"]

    dns = next(rule for rule in egress if any(p["port"] == 53 for p in rule.get("ports", [])))
    assert dns["to"] == [{
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
    }]
    assert sorted((p["protocol"], p["port"]) for p in dns["ports"]) == [("TCP", 53), ("UDP", 53)]


def test_by_default_no_rule_opens_any_address(make_agent, settings):
    # An egress rule without peers, or with 0.0.0.0/0, lets a goal pod send anywhere.
    policy = render_network_policy(make_agent(), [], settings)

    assert all(rule.get("to") for rule in policy["spec"]["egress"])
    assert not [peer for peer in egress_peers(policy) if "ipBlock" in peer]


def test_network_policy_allows_the_configured_model_cidrs_but_not_the_private_ranges(make_agent, clean_env):
    settings = Settings(model_egress_cidrs=["0.0.0.0/0"])

    policy = render_network_policy(make_agent(), [], settings)

    rule = rule_reaching(policy, "0.0.0.0/0")
    assert rule["to"] == [{"ipBlock": {"cidr": "0.0.0.0/0", "except": PRIVATE_RANGES}}]
    assert rule["ports"] == [{"protocol": "TCP", "port": 443}]


def test_with_a_gateway_agents_reach_the_gateway_and_not_the_internet(make_agent, clean_env):
    settings = Settings(gateway_url="http://overseer-gateway.overseer-system:8080", model_egress_cidrs=["0.0.0.0/0"])

    policy = render_network_policy(make_agent(), [], settings)

    assert not [peer for peer in egress_peers(policy) if "ipBlock" in peer]
    [rule] = [r for r in policy["spec"]["egress"] if r["ports"] == [{"protocol": "TCP", "port": 8080}]]
    assert rule["to"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "overseer-system"}},
                           "podSelector": {"matchLabels": {"app.kubernetes.io/name": "overseer-gateway"}}}]


def test_private_ranges_are_excepted_from_every_model_cidr_that_contains_them(make_agent, clean_env):
    # Splitting 0.0.0.0/0 into halves must not open the cluster's own networks.
    settings = Settings(model_egress_cidrs=["0.0.0.0/1", "128.0.0.0/1"])

    policy = render_network_policy(make_agent(), [], settings)

    blocks = [peer["ipBlock"] for peer in egress_peers(policy) if "ipBlock" in peer]
    assert {"cidr": "0.0.0.0/1", "except": ["10.0.0.0/8"]} in blocks
    assert {"cidr": "128.0.0.0/1", "except": ["172.16.0.0/12", "192.168.0.0/16"]} in blocks


def test_except_names_only_ranges_inside_the_model_cidr(make_agent, clean_env):
    # The API server rejects an ipBlock whose except is not a strict subset of its cidr.
    settings = Settings(model_egress_cidrs=["203.0.113.0/24", "10.0.0.0/8", "::/0"])

    policy = render_network_policy(make_agent(), [], settings)

    for peer in egress_peers(policy):
        block = peer.get("ipBlock")
        if block is None:
            continue
        cidr = ipaddress.ip_network(block["cidr"])
        for excepted in map(ipaddress.ip_network, block.get("except", [])):
            assert excepted.version == cidr.version and excepted.subnet_of(cidr) and excepted != cidr, block
    assert {"ipBlock": {"cidr": "203.0.113.0/24"}} in egress_peers(policy)


def test_network_policy_leaves_the_api_server_closed_unless_configured(make_agent, settings):
    policy = render_network_policy(make_agent(), [], settings)

    assert not any(p["port"] == 6443 for rule in policy["spec"]["egress"] for p in rule.get("ports", []))


def test_network_policy_opens_the_configured_api_server(make_agent, clean_env):
    settings = Settings(api_server_cidrs=["10.96.0.1/32", "172.18.0.2/32"])

    policy = render_network_policy(make_agent(), [], settings, api_server_egress(settings, []))

    rule = rule_reaching(policy, "10.96.0.1/32")
    assert rule == {"to": [{"ipBlock": {"cidr": "10.96.0.1/32"}}, {"ipBlock": {"cidr": "172.18.0.2/32"}}],
                    "ports": [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 6443}]}


def test_network_policy_opens_the_api_servers_published_endpoints(make_agent, settings):
    slices = [{"addressType": "IPv4", "endpoints": [{"addresses": ["172.18.0.2"], "conditions": {"ready": True}}],
               "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}]}]

    policy = render_network_policy(make_agent(), [], settings, api_server_egress(settings, slices))

    assert rule_reaching(policy, "172.18.0.2/32") == {"to": [{"ipBlock": {"cidr": "172.18.0.2/32"}}],
                                                      "ports": [{"protocol": "TCP", "port": 6443}]}


def test_capability_cidr_becomes_an_ip_block_with_its_ports(make_agent, make_capability, settings):
    cap = make_capability("git", egress=[{"cidr": "140.82.112.0/20", "ports": [22, 443]}])

    policy = render_network_policy(make_agent(capabilities=["git"]), [cap], settings)

    assert rule_reaching(policy, "140.82.112.0/20") == {
        "to": [{"ipBlock": {"cidr": "140.82.112.0/20"}}],
        "ports": [{"protocol": "TCP", "port": 22}, {"protocol": "TCP", "port": 443}],
    }


def test_capability_selectors_become_namespace_and_pod_selectors(make_agent, make_capability, settings):
    cap = make_capability("postgres", egress=[{
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "databases"}},
        "podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["postgres"]}]},
        "ports": [5432],
    }])

    egress = render_network_policy(make_agent(capabilities=["postgres"]), [cap], settings)["spec"]["egress"]

    assert egress[-1] == {
        "to": [{
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "databases"},
                                  "matchExpressions": []},
            "podSelector": {"matchLabels": {},
                            "matchExpressions": [{"key": "app", "operator": "In", "values": ["postgres"]}]},
        }],
        "ports": [{"protocol": "TCP", "port": 5432}],
    }


def test_capability_pod_selector_alone_stays_in_the_agents_namespace(make_agent, make_capability, settings):
    cap = make_capability("cache", egress=[{"podSelector": {"matchLabels": {"app": "redis"}}}])

    egress = render_network_policy(make_agent(capabilities=["cache"]), [cap], settings)["spec"]["egress"]

    assert egress[-1]["to"] == [{"podSelector": {"matchLabels": {"app": "redis"}, "matchExpressions": []}}]


def test_capability_ports_keep_their_protocol(make_agent, make_capability, settings):
    cap = make_capability("syslog", egress=[{"cidr": "192.0.2.10/32", "ports": [514], "protocol": "UDP"}])

    policy = render_network_policy(make_agent(capabilities=["syslog"]), [cap], settings)

    assert rule_reaching(policy, "192.0.2.10/32")["ports"] == [{"protocol": "UDP", "port": 514}]


def test_capability_without_ports_opens_every_port_of_its_destination(make_agent, make_capability, settings):
    cap = make_capability("intranet", egress=[{"cidr": "192.0.2.0/24"}])

    policy = render_network_policy(make_agent(capabilities=["intranet"]), [cap], settings)

    assert rule_reaching(policy, "192.0.2.0/24") == {"to": [{"ipBlock": {"cidr": "192.0.2.0/24"}}]}


def test_the_gateway_pods_port_is_opened_when_it_differs_from_the_services(make_agent, clean_env):
    # A NetworkPolicy sees the pod's port after the Service's translation, not the Service's port.
    settings = Settings(gateway_url="http://overseer-gateway.overseer-system", gateway_pod_port=8080)

    policy = render_network_policy(make_agent(), [], settings)

    assert {"protocol": "TCP", "port": 8080} in policy["spec"]["egress"][1]["ports"]


def test_knowledge_base_and_redis_are_reached_by_their_pods_or_addresses(make_agent, clean_env):
    settings = Settings(knowledge_egress=ServiceEgress(namespace="databases", pod_labels={"app": "pg"}, ports=[5432]),
                        redis_egress=ServiceEgress(cidrs=["192.0.2.7/32"], ports=[6379]))

    egress = render_network_policy(make_agent(), [], settings)["spec"]["egress"]

    assert {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "databases"}},
                    "podSelector": {"matchLabels": {"app": "pg"}}}],
            "ports": [{"protocol": "TCP", "port": 5432}]} in egress
    assert {"to": [{"ipBlock": {"cidr": "192.0.2.7/32"}}], "ports": [{"protocol": "TCP", "port": 6379}]} in egress


def test_network_policy_without_capabilities_opens_nothing_more(make_agent, settings):
    egress = render_network_policy(make_agent(), [], settings)["spec"]["egress"]

    assert len(egress) == 1  # DNS alone: nothing else is configured


# --- ModelEgress condition -------------------------------------------------------------------


def test_an_agent_whose_model_endpoint_no_egress_reaches_is_told_what_to_set(make_agent, settings):
    ok, reason, message = model_egress_condition(make_agent(), settings)

    assert (ok, reason) == (False, "ModelEgressNotConfigured")
    assert "https://api.anthropic.com" in message and "networkPolicy.modelEgress.cidrs" in message


@pytest.mark.parametrize("base_url, cidrs, reason", [
    ("https://203.0.113.9", ["203.0.113.0/24"], "Allowed"),
    ("https://198.51.100.9", ["203.0.113.0/24"], "ModelAddressNotAllowed"),
    ("https://10.0.0.5", ["0.0.0.0/0"], "ModelAddressNotAllowed"),  # a private range excepted from 0.0.0.0/0
    ("https://10.0.0.5", ["10.0.0.0/24"], "Allowed"),  # named itself: nothing is excepted from it
    ("http://203.0.113.9:8080", ["203.0.113.0/24"], "ModelPortNotAllowed"),
    ("https://models.example.com", ["203.0.113.0/24"], "Allowed"),  # a name cannot be checked; its port is
])
def test_the_model_endpoint_is_checked_against_the_configured_cidrs_and_ports(make_agent, clean_env, base_url,
                                                                             cidrs, reason):
    agent = make_agent(model={"baseURL": base_url})

    ok, got, message = model_egress_condition(agent, Settings(model_egress_cidrs=cidrs))

    assert (ok, got) == (reason == "Allowed", reason), message


def test_with_a_gateway_the_model_endpoint_is_the_gateways_business(make_agent, clean_env):
    settings = Settings(gateway_url="http://overseer-gateway.overseer-system:8080")

    assert model_egress_condition(make_agent(), settings)[:2] == (True, "Gateway")


# --- ResourceQuota -------------------------------------------------------------------------------


def test_resource_quota_mirrors_the_agents_quota_as_strings(make_agent):
    agent = make_agent(quota={"pods": 4, "requests.cpu": "2", "requests.memory": "4Gi"})

    quota = render_resource_quota(agent)

    assert quota is not None
    assert quota["kind"] == "ResourceQuota"
    assert quota["spec"] == {"hard": {"pods": "4", "requests.cpu": "2", "requests.memory": "4Gi"}}


@pytest.mark.parametrize("quota", [None, {}])
def test_no_resource_quota_without_a_quota(make_agent, quota):
    assert render_resource_quota(make_agent(quota=quota)) is None


# --- ServiceEgress condition -----------------------------------------------------------------


def test_a_knowledge_base_handed_to_goal_pods_but_not_opened_is_named(make_agent, clean_env):
    settings = Settings(knowledge_admin_url="postgresql://admin@db/kb", agent_redis_url="redis://cache:6379",
                        redis_egress=ServiceEgress(cidrs=["192.0.2.7/32"], ports=[6379]))

    ok, reason, message = service_egress_condition(make_agent(), settings)

    assert (ok, reason) == (False, "ServiceEgressNotConfigured")
    assert "the knowledge base" in message and "networkPolicy.knowledgeBase" in message
    assert "OVERSEER_REDIS_EGRESS" not in message  # Redis is opened


def test_services_opened_or_not_handed_out_are_fine(make_agent, clean_env):
    opened = Settings(knowledge_admin_url="postgresql://admin@db/kb",
                      knowledge_egress=ServiceEgress(namespace="db", pod_labels={"app": "pg"}, ports=[5432]))

    assert service_egress_condition(make_agent(), opened)[:2] == (True, "Allowed")
    assert service_egress_condition(make_agent(), Settings())[:2] == (True, "Allowed")
