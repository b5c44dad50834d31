"""The pod of one attempt of a Goal."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest

from overseer.contract import secret_env
from overseer.operator.pods import pod_name, render_pod
from overseer.operator.redis_secret import render_secret

# Volume types the `restricted` Pod Security level allows.
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret"}
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod["spec"]
    return spec["containers"] + spec.get("initContainers", []) + spec.get("ephemeralContainers", [])


def env_of(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    container, _tools = pod["spec"]["containers"]
    return {e["name"]: e for e in container["env"]}


def assert_restricted(pod: dict[str, Any]) -> None:
    """The checks of the `restricted` Pod Security Standard that can be made on the manifest."""
    spec = pod["spec"]
    pod_sc = spec.get("securityContext", {})
    for host in ("hostNetwork", "hostPID", "hostIPC", "hostUsers"):
        assert not spec.get(host), host
    for volume in spec.get("volumes", []):
        kinds = set(volume) - {"name"}
        assert kinds <= RESTRICTED_VOLUMES, volume
    assert "sysctls" not in pod_sc
    assert pod_sc.get("runAsUser") != 0
    for c in containers(pod):
        sc = c.get("securityContext", {})
        assert not sc.get("privileged"), c["name"]
        assert sc.get("allowPrivilegeEscalation") is False, c["name"]
        assert "ALL" in sc.get("capabilities", {}).get("drop", []), c["name"]
        assert set(sc.get("capabilities", {}).get("add", [])) <= {"NET_BIND_SERVICE"}, c["name"]
        assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, c["name"]
        assert sc.get("runAsUser", pod_sc.get("runAsUser")) != 0, c["name"]
        seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {}))
        assert seccomp.get("type") in ("RuntimeDefault", "Localhost"), c["name"]
        assert sc.get("procMount", "Default") == "Default", c["name"]
        assert not sc.get("windowsOptions", {}).get("hostProcess"), c["name"]
        assert all("hostPort" not in p for p in c.get("ports", [])), c["name"]


# --- security ------------------------------------------------------------------------------------


def test_pod_passes_the_restricted_pod_security_level(make_goal, make_agent, settings):
    assert_restricted(render_pod(make_goal(), make_agent(), 1, settings))


def test_pod_runs_as_non_root_with_the_runtime_default_seccomp_profile(make_goal, make_agent, settings):
    pod = render_pod(make_goal(), make_agent(), 1, settings)

    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container, _tools = pod["spec"]["containers"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_pod_mounts_nothing_from_the_node(make_goal, make_agent, settings):
    spec = render_pod(make_goal(), make_agent(), 1, settings)["spec"]

    assert not spec.get("hostNetwork")
    assert all("hostPath" not in v for v in spec["volumes"])


def test_pod_runs_as_the_agents_service_account(make_goal, make_agent, settings):
    pod = render_pod(make_goal(), make_agent("coder"), 1, settings)

    assert pod["spec"]["serviceAccountName"] == "overseer-agent-coder"


# --- identity --------------------------------------------------------------------------------------


def test_pod_is_labelled_with_its_agent_goal_and_attempt(make_goal, make_agent, settings):
    labels = render_pod(make_goal("fix-ci"), make_agent("coder"), 3, settings)["metadata"]["labels"]

    assert labels["overseer.dev/agent"] == "coder"
    assert labels["overseer.dev/goal"] == "fix-ci"
    assert labels["overseer.dev/attempt"] == "3"


def test_pod_is_owned_by_its_goal(make_goal, make_agent, settings):
    goal = make_goal("fix-ci")

    metadata = render_pod(goal, make_agent(), 1, settings)["metadata"]

    assert metadata["namespace"] == goal.namespace
    assert metadata["ownerReferences"] == [{
        "apiVersion": "overseer.dev/v1alpha1", "kind": "Goal", "name": "fix-ci", "uid": goal.metadata["uid"],
        "controller": True, "blockOwnerDeletion": True,
    }]


def test_pod_tells_the_runtime_which_goal_and_agent_it_serves(make_goal, make_agent, settings):
    goal = make_goal("fix-ci")

    env = env_of(render_pod(goal, make_agent("coder"), 2, settings))

    assert env["OVERSEER_GOAL_NAME"]["value"] == "fix-ci"
    assert env["OVERSEER_GOAL_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["OVERSEER_AGENT_NAME"]["value"] == "coder"


def test_api_key_comes_from_the_agents_secret(make_goal, make_agent, settings):
    agent = make_agent(model={"apiKeySecretRef": {"name": "team-a-anthropic", "key": "token"}})

    env = env_of(render_pod(make_goal(), agent, 1, settings))

    assert env["ANTHROPIC_API_KEY"] == {"name": "ANTHROPIC_API_KEY", "valueFrom": {
        "secretKeyRef": {"name": "team-a-anthropic", "key": "token"}}}
    assert "value" not in env["ANTHROPIC_API_KEY"]


def test_capability_header_secrets_reach_the_pod_by_reference_once_each(make_goal, make_agent, make_capability,
                                                                        settings):
    token = {"name": "Authorization", "secretKeyRef": {"name": "tracker", "key": "token"}}
    caps = [make_capability("issues", command=None, http={"url": "http://tracker:80/api", "headers": [token]}),
            make_capability("tracker-mcp", command=None, mcp={"url": "http://tracker:80/mcp", "headers": [
                token, {"name": "X-Team", "value": "team-a"}]})]

    env = env_of(render_pod(make_goal(), make_agent(capabilities=["issues", "tracker-mcp"]), 1, settings, caps))

    name = secret_env("tracker", "token")
    assert env[name] == {"name": name, "valueFrom": {"secretKeyRef": {"name": "tracker", "key": "token"}}}
    assert [e for e in env if e.startswith("OVERSEER_SECRET_")] == [name]
    assert "team-a" not in str(env), "literal headers stay in the Capability, read by the agent"


def test_the_knowledge_base_login_comes_from_the_namespaces_secret_never_as_a_value(make_goal, make_agent, settings):
    settings.knowledge_admin_url = "postgresql://admin:s3cret@db.overseer-system:5432/overseer"

    env = env_of(render_pod(make_goal(), make_agent(), 1, settings))

    assert env["OVERSEER_DATABASE_URL"] == {"name": "OVERSEER_DATABASE_URL", "valueFrom": {
        "secretKeyRef": {"name": "overseer-knowledge", "key": "url", "optional": True}}}
    assert not any("s3cret" in str(e) or "db.overseer-system" in str(e) for e in env.values())


def test_the_redis_url_comes_from_the_namespaces_secret_never_as_a_value(make_goal, make_agent, settings):
    settings.agent_redis_url = "redis://:r3dis-pass@redis.overseer-system:6379/0"

    pod = render_pod(make_goal(), make_agent(), 1, settings)

    assert env_of(pod)["OVERSEER_REDIS_URL"] == {"name": "OVERSEER_REDIS_URL", "valueFrom": {
        "secretKeyRef": {"name": "overseer-redis", "key": "url", "optional": True}}}
    assert "r3dis-pass" not in json.dumps(pod)
    secret = render_secret("team-a", settings.agent_redis_url)
    assert (secret["metadata"]["name"], secret["metadata"]["namespace"]) == ("overseer-redis", "team-a")
    assert base64.b64decode(secret["data"]["url"]).decode() == settings.agent_redis_url


def test_no_knowledge_base_means_no_database_in_the_pod(make_goal, make_agent, settings):
    assert "OVERSEER_DATABASE_URL" not in env_of(render_pod(make_goal(), make_agent(), 1, settings))


def test_base_url_is_passed_only_when_the_agent_sets_one(make_goal, make_agent, settings):
    default = env_of(render_pod(make_goal(), make_agent(), 1, settings))
    custom = env_of(render_pod(make_goal(), make_agent(model={"baseURL": "https://llm.internal:8443"}), 1, settings))

    assert "ANTHROPIC_BASE_URL" not in default
    assert custom["ANTHROPIC_BASE_URL"]["value"] == "https://llm.internal:8443"


def test_with_a_gateway_the_pod_gets_a_token_bound_to_itself_and_no_api_key(make_goal, make_agent, settings):
    settings.gateway_url = "http://overseer-gateway.overseer-system:8080"
    agent = make_agent(model={"baseURL": "https://llm.internal:8443",
                              "apiKeySecretRef": {"name": "team-a-anthropic", "key": "token"}})

    pod = render_pod(make_goal(), agent, 1, settings)

    env = env_of(pod)
    assert env["ANTHROPIC_BASE_URL"]["value"] == "http://overseer-gateway.overseer-system:8080"
    assert "ANTHROPIC_API_KEY" not in env
    assert "team-a-anthropic" not in repr(pod) and "secretKeyRef" not in repr(pod)
    [token] = [v for v in pod["spec"]["volumes"] if v["name"] == "gateway-token"]
    assert token["projected"]["sources"] == [{"serviceAccountToken": {
        "audience": "overseer-gateway", "expirationSeconds": 600, "path": "token"}}]
    [mount] = [m for m in pod["spec"]["containers"][0]["volumeMounts"] if m["name"] == "gateway-token"]
    assert mount["readOnly"] is True
    assert env["OVERSEER_GATEWAY_TOKEN_FILE"]["value"] == mount["mountPath"] + "/token"
    assert_restricted(pod)


# --- the container -------------------------------------------------------------------------------


def test_pod_uses_the_operators_agent_image_by_default(make_goal, make_agent, settings):
    container, _tools = render_pod(make_goal(), make_agent(), 1, settings)["spec"]["containers"]

    assert container["image"] == settings.agent_image


def test_agent_image_overrides_the_operators_default(make_goal, make_agent, settings):
    agent = make_agent(image="registry.example.com/team-a/agent:2.0")

    container, _tools = render_pod(make_goal(), agent, 1, settings)["spec"]["containers"]

    assert container["image"] == "registry.example.com/team-a/agent:2.0"


def test_pod_gets_the_agents_resources(make_goal, make_agent, settings):
    # numbers are quantities too (the schema is int-or-string): the pod gets them as quantity strings
    agent = make_agent(resources={"requests": {"cpu": "250m", "memory": "256Mi"},
                                  "limits": {"cpu": 1, "memory": 1000000000000}})

    container, _tools = render_pod(make_goal(), agent, 1, settings)["spec"]["containers"]

    assert container["resources"] == {"requests": {"cpu": "250m", "memory": "256Mi"},
                                      "limits": {"cpu": "1", "memory": "1000000000000"}}


def test_pod_is_never_restarted_in_place(make_goal, make_agent, settings):
    # A retry is a new attempt with a new pod, counted by the operator.
    assert render_pod(make_goal(), make_agent(), 1, settings)["spec"]["restartPolicy"] == "Never"


def test_render_pod_is_deterministic(make_goal, make_agent, settings):
    assert render_pod(make_goal(), make_agent(), 1, settings) == render_pod(make_goal(), make_agent(), 1, settings)


# --- pod_name --------------------------------------------------------------------------------------


def test_pod_name_is_the_goal_name_and_attempt():
    assert pod_name("fix-ci", 1) == "fix-ci-a1"
    assert pod_name("fix-ci", 12) == "fix-ci-a12"


def test_pod_name_is_deterministic_and_distinct_per_attempt():
    long = "g" * 63

    assert pod_name(long, 1) == pod_name(long, 1)
    assert pod_name(long, 1) != pod_name(long, 2)


@pytest.mark.parametrize("length", [1, 59, 60, 61, 62, 63])
@pytest.mark.parametrize("attempt", [1, 10, 999])
def test_pod_name_fits_a_dns_label(length, attempt):
    name = pod_name("g" * length, attempt)

    assert len(name) <= 63
    assert DNS_SUBDOMAIN.match(name), name
    assert name.endswith(f"-a{attempt}")


def test_long_goal_names_sharing_a_prefix_get_distinct_pods():
    prefix = "nightly-regression-suite-for-the-payments-service-"  # 50 characters
    first, second = prefix + "eu-west-1-a", prefix + "eu-west-1-b"

    assert pod_name(first, 1) != pod_name(second, 1)
    assert len(pod_name(first, 1)) <= 63 and len(pod_name(second, 1)) <= 63


@pytest.mark.parametrize("cut", [".", "-"])
def test_pod_name_is_valid_where_the_goal_name_is_cut(cut):
    # Goal names are DNS subdomains: the cut may land on a dot, and "x.-digest" is no valid name.
    goal = "a" * 50 + cut + "b" * 12

    name = pod_name(goal, 1)

    assert len(name) <= 63
    assert DNS_SUBDOMAIN.match(name), name


def test_tools_run_in_a_container_without_the_token_or_the_agents_credentials(make_goal, make_agent, settings):
    settings.knowledge_admin_url = "postgresql://admin:s3cret@db:5432/overseer"
    settings.agent_redis_url = "redis://:r3dis@redis:6379/0"

    pod = render_pod(make_goal(), make_agent(), 1, settings)

    agent, tools = pod["spec"]["containers"]
    assert (tools["name"], tools["command"]) == ("tools", ["overseer-tools"])
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert not pod["spec"].get("shareProcessNamespace")
    assert {e["name"] for e in tools["env"]} == {"OVERSEER_WORKSPACE", "OVERSEER_TOOLS_SOCKET"}
    assert all("value" in e for e in tools["env"])
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    tool_volumes = {m["name"] for m in tools["volumeMounts"]}
    assert tool_volumes == {"workspace", "tools-tmp", "tools-socket"}
    assert not any("secret" in volumes[name] or "projected" in volumes[name] for name in tool_volumes)
    [token] = [m for m in agent["volumeMounts"] if m["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount"]
    assert "serviceAccountToken" in str(volumes[token["name"]])
    socket = {m["mountPath"] for m in tools["volumeMounts"] if m["name"] == "tools-socket"}
    assert socket == {m["mountPath"] for m in agent["volumeMounts"] if m["name"] == "tools-socket"}
    assert env_of(pod)["OVERSEER_TOOLS_SOCKET"]["value"].startswith(socket.pop() + "/")


def test_a_command_capabilitys_credential_reaches_the_agent_container_by_secret_reference(
        make_goal, make_agent, settings):
    from overseer.api import Capability
    from overseer.contract import capability_env

    deploy = Capability.model_validate({
        "apiVersion": "overseer.dev/v1alpha1", "kind": "Capability", "metadata": {"name": "deploy", "namespace": "team-a"},
        "spec": {"description": "Deploy", "command": {"run": ["deploy"], "env": [
            {"name": "DEPLOY_TOKEN", "secretKeyRef": {"name": "deploy-creds", "key": "token"}}]}}})

    pod = render_pod(make_goal(), make_agent(capabilities=["deploy"]), 1, settings, [deploy])

    var = capability_env("deploy", "DEPLOY_TOKEN")
    assert env_of(pod)[var] == {"name": var, "valueFrom": {
        "secretKeyRef": {"name": "deploy-creds", "key": "token", "optional": True}}}
    assert var not in {e["name"] for e in pod["spec"]["containers"][1]["env"]}
