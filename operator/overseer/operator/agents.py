"""Agent reconciliation: its ServiceAccount, Role, RoleBinding, NetworkPolicy and
ResourceQuota, kept in line with the spec; its namespace's knowledge-base login and what it
shares; Ready, CapabilitiesReady, KnowledgeBase, APIServerEgress, ModelEgress and ServiceEgress;
goal counts."""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import logging
import time
from pathlib import Path
from typing import Any

from overseer import modifications
from overseer.api import Agent, Capability
from overseer.prices import PriceTableError

from . import agent_resources as render, failures
from .api_server import SLICES_SOURCE, APIServerEgress
from .capabilities import needed, not_ready_reason
from .conditions import condition, same_conditions, set_condition, summarize
from .knowledge_backlog import knowledge_condition
from .modification_store import ModificationStore, describe
from .pricing import price_condition
from overseer.kube import ApiError, path
from .runtime import Key, Runtime, agent_path
from .warm_pool import WarmPool

logger = logging.getLogger(__name__)


def deprecated_models() -> dict[str, str]:
    """Model name -> end-of-life date, as the installed anthropic SDK knows them. Read from the
    SDK's data file without importing the SDK: importing it costs the operator seconds of CPU
    at start and tens of MB for good, for one small table."""
    spec = importlib.util.find_spec("anthropic")  # finds the package without running it
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:
        table = Path(folder) / "_data" / "deprecated_models.py"
        if table.is_file():
            return _dict_literal(table.read_text(), "DEPRECATED_MODELS")
    logger.warning("the anthropic SDK's table of deprecated models was not found: ModelSupported stays True")
    return {}


def _dict_literal(source: str, name: str) -> dict[str, str]:
    """The dict literal assigned to `name` in a module's source, or {} when it is not one."""
    for node in ast.parse(source).body:
        target: ast.expr
        expr: ast.expr | None
        if isinstance(node, ast.AnnAssign):
            target, expr = node.target, node.value
        elif isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, expr = node.targets[0], node.value
        else:
            continue
        if isinstance(target, ast.Name) and target.id == name and expr is not None:
            try:
                value = ast.literal_eval(expr)
            except ValueError:
                break
            if isinstance(value, dict):
                return {str(k): str(v) for k, v in value.items()}
    logger.warning("the anthropic SDK's %s is not a literal table any more: ModelSupported stays True", name)
    return {}


# Read once, when the operator loads (a parse of one small file). Importing the SDK instead took
# seconds of CPU, tens on a busy machine, which inside the first Agent reconcile blocked the event
# loop past a leader's renew deadline (/healthz showed "event loop blocked for 36 s").
DEPRECATED_MODELS = deprecated_models()


def api_server_condition(agent: Agent, api_server: APIServerEgress | None) -> tuple[bool, str, str]:
    """Whether the agent's NetworkPolicy lets its goal pods reach the API server they report to."""
    if api_server is not None:
        return True, "Allowed", f"goal pods may reach the API server at {api_server.describe()}"
    return False, "APIServerAddressUnknown", (
        f"Agent {agent.namespace}/{agent.name}: NetworkPolicy {render.child_name(agent.name)} opens no way to the "
        f"API server: OVERSEER_API_SERVER_CIDRS is unset and no {SLICES_SOURCE} names an address. Under a network "
        f"plugin that enforces NetworkPolicy, goal pods cannot report; set OVERSEER_API_SERVER_CIDRS on the operator")


def capabilities_condition(agent: Agent, caps: dict[str, tuple[list[str], dict[str, Any] | None]]
                           ) -> tuple[bool, str, str]:
    """CapabilitiesReady: whether every capability the agent needs (its own and what they require)
    is there and Ready, or the missing link, with the chain of requires that leads to it."""
    ns, name = agent.namespace, agent.name

    def via(chain: list[str]) -> str:
        return "" if len(chain) == 1 else f" (needed by {' -> '.join(chain)})"

    missing = [(n, chain) for n, (chain, raw) in caps.items() if raw is None]
    if missing:
        return False, "CapabilityNotFound", (
            f"Agent {ns}/{name}: capability " + ", ".join(n + via(chain) for n, chain in missing)
            + f" does not exist in namespace {ns} (spec.capabilities)")
    unready = {n: (chain, raw) for n, (chain, raw) in caps.items() if not_ready_reason(raw) is not None}
    if unready:
        # Name the capability at the end of the broken chain, not those only waiting for it.
        own = {n: v for n, v in unready.items() if not_ready_reason(v[1]) != "RequirementNotReady"} or unready
        parts = []
        for n, (chain, raw) in own.items():
            ready = condition(((raw or {}).get("status") or {}).get("conditions") or [], "Ready") or {}
            parts.append(f"{n}{via(chain)}: {ready.get('reason', 'NotValidatedYet')}"
                         + (f" ({ready['message']})" if ready.get("message") else ""))
        return False, "CapabilityNotReady", "capabilities not Ready: " + "; ".join(parts)
    return True, "AllReady", f"{len(caps)} capabilities ready" + (
        f" ({len(caps) - len(agent.spec.capabilities)} through requires)" if len(caps) > len(agent.spec.capabilities)
        else "")


def _collection(obj: dict[str, Any]) -> str:
    plural = {"ServiceAccount": "serviceaccounts", "Role": "roles", "RoleBinding": "rolebindings",
              "NetworkPolicy": "networkpolicies", "ResourceQuota": "resourcequotas"}[obj["kind"]]
    return path(obj["apiVersion"], plural, obj["metadata"]["namespace"], obj["metadata"]["name"])


# An Agent's goal counts follow its goals' changes after COUNTS_DELAY seconds, and are written at
# most once per COUNTS_INTERVAL: one goal's change shows within a second, and a burst of a thousand
# goals costs a count write every few seconds, not one a second for as long as the burst lasts.
COUNTS_DELAY, COUNTS_INTERVAL = 1.0, 5.0


class AgentReconciler:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._status_written: dict[Key, float] = {}  # when each Agent's status was last written (monotonic)
        self._applied: dict[Key, str] = {}  # fingerprint of the children last applied
        self._secrets_found: dict[tuple[str, str, str], float] = {}  # when each Secret was last seen
        self.modifications = ModificationStore(rt.kube)
        self._not_found: set[tuple[str, str, str]] = set()  # revert ids already warned about
        self.pool = WarmPool(rt)

    def counts_delay(self, key: Key) -> float:
        """How long a change of this Agent's goals waits before its counts are written."""
        since = time.monotonic() - self._status_written.get(key, float("-inf"))
        return max(COUNTS_DELAY, COUNTS_INTERVAL - since)

    def forget(self) -> None:
        """Apply every agent's children and read every Secret again on the next reconcile (drift repair)."""
        self._applied.clear()
        self._secrets_found.clear()
        if self.rt.knowledge is not None:
            self.rt.knowledge.forget()
        if self.rt.redis is not None:
            self.rt.redis.forget()

    async def check_secret(self, agent: Agent) -> tuple[bool, str, str]:
        """Whether the API key Secret is there. A found one is trusted for secret_recheck_seconds:
        agents are reconciled for every change of their goal counts, and a read each time would
        cost the API server one GET per goal."""
        ref = agent.spec.model.api_key_secret_ref
        key = (agent.namespace, ref.name, ref.key)
        found_at = self._secrets_found.get(key)
        if found_at is not None and time.monotonic() - found_at < self.rt.settings.secret_recheck_seconds:
            return True, "SecretFound", ""
        secret = await self.rt.kube.get(path("v1", "secrets", agent.namespace, ref.name))
        if secret is None:
            return False, "SecretNotFound", (f"Agent {agent.namespace}/{agent.name}: spec.model.apiKeySecretRef.name "
                                             f"{ref.name!r} does not exist in namespace {agent.namespace}")
        if ref.key not in (secret.get("data") or {}) and ref.key not in (secret.get("stringData") or {}):
            return False, "SecretKeyNotFound", (f"Agent {agent.namespace}/{agent.name}: Secret {ref.name!r} has no key "
                                                f"{ref.key!r} (spec.model.apiKeySecretRef.key)")
        self._secrets_found[key] = time.monotonic()
        return True, "SecretFound", ""

    async def apply_children(self, agent: Agent, caps: list[Capability]) -> None:
        children = [render.render_service_account(agent), render.render_role(agent, [c.name for c in caps]),
                    render.render_role_binding(agent), render.render_network_policy(agent, caps, self.rt.settings, self.rt.api_server)]
        quota = render.render_resource_quota(agent)
        fingerprint = hashlib.sha256(json.dumps([children, quota], sort_keys=True).encode()).hexdigest()
        key = (agent.namespace, agent.name)
        if self._applied.get(key) == fingerprint:
            return
        for child in children:
            await self.rt.kube.apply(_collection(child), child)
        if quota is not None:
            await self.rt.kube.apply(_collection(quota), quota)
        else:
            await self.rt.kube.delete(path("v1", "resourcequotas", agent.namespace, render.child_name(agent.name)))
        self._applied[key] = fingerprint

    async def sync_modifications(self, raw: dict[str, Any]) -> int:
        """Carry out the revert annotation (`overseer.dev/revert=ID[,ID...]`), if any; return how
        many modifications later goals use."""
        ns, name = raw["metadata"]["namespace"], raw["metadata"]["name"]
        cm = self.rt.one("configmaps", (ns, modifications.configmap_name(name)))
        cached = dict((cm or {}).get("data") or {})
        ids = [i for i in modifications.revert_ids(raw["metadata"].get("annotations"))
               if (ns, name, i) not in self._not_found]
        if all(r.get("reverted") for r in modifications.records({i: cached[i] for i in ids if i in cached})) \
                and all(i in cached for i in ids):
            return len(modifications.active(cached))  # nothing left to revert: no read of the server
        reverted, missing, data = await self.modifications.revert(raw, ids)
        for rec in reverted:
            self.rt.events.record(raw, "Normal", "ModificationReverted",
                                          f"{describe(rec)} reverted by {rec['revertedBy']}; later goals no longer "
                                          f"use it (kept in ConfigMap {modifications.configmap_name(name)})")
        for missing_id in missing:
            if (ns, name, missing_id) not in self._not_found:
                self._not_found.add((ns, name, missing_id))
                self.rt.events.record(
                    raw, "Warning", "ModificationNotFound",
                    f"Agent {ns}/{name}: annotation {modifications.REVERT} names {missing_id!r}, which ConfigMap "
                    f"{modifications.configmap_name(name)} does not hold")
        return len(modifications.active(data))

    async def reconcile(self, key: Key) -> float | None:
        ns, name = key
        raw = self.rt.one("agents", key)
        if raw is None:
            self._applied.pop(key, None)
            self._status_written.pop(key, None)
            if self.rt.knowledge is not None:
                await self.rt.knowledge.unshare(ns, name)
            return None  # children go with it: they carry owner references
        agent = Agent.model_validate(raw)
        gen = agent.generation
        status = raw.get("status") or {}
        conds: list[dict[str, Any]] = list(status.get("conditions") or [])
        requeue: float | None = None

        caps_raw = needed(self.rt, ns, agent.spec.capabilities)
        caps_ok, caps_reason, caps_msg = capabilities_condition(agent, caps_raw)
        conds = set_condition(conds, "CapabilitiesReady", caps_ok, caps_reason, caps_msg, gen)

        secret_ok, secret_reason, secret_msg = await self.check_secret(agent)
        if not secret_ok:
            requeue = self.rt.settings.secret_recheck_seconds  # secrets are not watched, only read

        if self.rt.redis is not None:
            await self.rt.redis.ensure(ns)  # before any goal pod of this namespace needs it
        if self.rt.knowledge is not None:
            access = await self.rt.knowledge.ensure(ns)
            if access.ready:
                access = await self.rt.knowledge.share(ns, name, agent.spec.knowledge.share_with) or access
            access = knowledge_condition(access, self.rt.knowledge_backlogs(ns, name))
            conds = set_condition(conds, "KnowledgeBase", access.ready, access.reason, access.message, gen)
            if not access.ready:
                # Goal pods still run, without the knowledge base, until this is put right.
                requeue = self.rt.settings.secret_recheck_seconds
        else:
            conds = [c for c in conds if c.get("type") != "KnowledgeBase"]

        caps = [Capability.model_validate(c) for _, c in caps_raw.values() if c is not None]
        refused = None
        try:
            await self.apply_children(agent, caps)
        except ApiError as e:
            if e.status in (409, 429) or e.status >= 500:
                raise  # clears itself: the work queue retries with backoff
            # A quota, an admission policy or a missing permission: only someone's change helps,
            # and the ResourceQuotas and policies are not watched, so look again later.
            refused = failures.describe(e, raw)
            requeue = self.rt.settings.secret_recheck_seconds

        conds = set_condition(conds, "APIServerEgress", *api_server_condition(agent, self.rt.api_server), gen)
        conds = set_condition(conds, "ModelEgress", *render.model_egress_condition(agent, self.rt.settings), gen)
        conds = set_condition(conds, "ServiceEgress", *render.service_egress_condition(agent, self.rt.settings), gen)

        eol = DEPRECATED_MODELS.get(agent.spec.model.name)
        if eol:
            msg = (f"spec.model.name {agent.spec.model.name!r} is deprecated and reaches end of life on {eol}; "
                   f"choose a current model")
            conds = set_condition(conds, "ModelSupported", False, "ModelDeprecated", msg, gen)
        else:
            conds = set_condition(conds, "ModelSupported", True, "ModelCurrent", "", gen)

        if self.rt.settings.gateway_url:
            try:
                self.rt.prices.reload()  # the mounted ConfigMap changes in place
            except (PriceTableError, OSError) as e:
                logger.warning("price table: %s; the last good one stays", e)
            priced = price_condition(agent, self.rt.prices)
            conds = set_condition(conds, "PriceKnown", *priced, gen)
            if not priced[0]:
                requeue = self.rt.settings.secret_recheck_seconds  # the price file is not watched, only read
        else:  # nothing is priced without the gateway
            conds = [c for c in conds if c.get("type") != "PriceKnown"]

        if not caps_ok:
            ready, reason, message = False, caps_reason, caps_msg
        elif not secret_ok:
            ready, reason, message = False, secret_reason, secret_msg
        elif refused:
            ready, reason, message = False, "ResourcesRefused", (
                f"Agent {ns}/{name}: goal pods cannot start until the objects they run with are in place: {refused}")
        else:
            ready, reason, message = True, "Ready", f"goal pods run as ServiceAccount {render.child_name(name)}"
        conds = summarize(conds, ready, reason, message, gen)  # not Ready: waiting for a Secret or Capability
        conds = set_condition(conds, "AdmissionPolicies", *self.rt.admission.condition(), gen)
        # Idle pods only while goals could run: a pod started without its Secret would never start.
        warm = await self.pool.sync(agent, caps, agent.spec.warm_pool if ready and agent.spec.workspace is None else 0,
                                    raw)

        try:
            active = await self.sync_modifications(raw)
        except ApiError as e:  # the Agent stays usable; the revert is tried again on the next reconcile
            logger.warning("Agent %s/%s: modifications not read: %s", ns, name, e)
            active = int(status.get("modifications") or 0)
        changes: dict[str, Any] = {"observedGeneration": gen, "serviceAccountName": render.child_name(name),
                                   "modifications": active, "warmPods": warm,
                                   **self.rt.goal_counts(ns, name)}
        old_conds = status.get("conditions") or []
        if not same_conditions(conds, old_conds):
            changes["conditions"] = conds
            for c in conds:
                before = next((o for o in old_conds if o.get("type") == c["type"]), None)
                if before is None or (before.get("status"), before.get("reason")) != (c["status"], c["reason"]):
                    if c["status"] != "True" and c["type"] in ("Ready", "ModelSupported", "APIServerEgress", "ModelEgress",
                                                                 "ServiceEgress", "AdmissionPolicies", "KnowledgeBase",
                                                                 "PriceKnown"):
                        self.rt.events.record(raw, "Warning", c["reason"], c["message"])
                    elif c["type"] == "Ready":
                        self.rt.events.record(raw, "Normal", "Ready", c["message"])
                    elif c["type"] == "KnowledgeBase" and before is not None:  # a full disk given space, say
                        self.rt.events.record(raw, "Normal", "KnowledgeBaseReady",
                                              f"KnowledgeBase is True again (was {before.get('reason')}): {c['message']}")
        if await self.rt.patch_status(agent_path(ns, name, "status"), raw, changes):
            self._status_written[key] = time.monotonic()
        return requeue
