"""State shared by the reconcilers: the API client, the caches and the work queues."""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

from overseer.api import API_VERSION, Phase
from overseer.api.meta import LABEL_AGENT, LABEL_GOAL

from overseer.kube import Kube, path
from overseer.prices import PriceTable
from .api_server import APIServerEgress
from .admission import PolicyState
from .dispatch import pod_outcome
from .events import EventRecorder
from .knowledge_tenants import KnowledgeTenants
from .pods import WARM_TEMPLATE
from .redis_secret import RedisSecrets
from .settings import Settings
from .store import Indexer, Key as Key, Raw as Raw, Store  # Key and Raw re-exported for the reconcilers
from .workqueue import WorkQueue

RUNNING_PHASES = {Phase.RUNNING.value: "runningGoals", Phase.AWAITING_APPROVAL.value: "runningGoals",
                  Phase.QUEUED.value: "queuedGoals", Phase.SUCCEEDED.value: "succeededGoals",
                  Phase.FAILED.value: "failedGoals"}
GOAL_COUNTS = ("runningGoals", "queuedGoals", "succeededGoals", "failedGoals", "tokensUsed")
BACKLOG_GOALS, DISK_FULL_GOALS = "knowledgeBacklogGoals", "knowledgeDiskFullGoals"
"""Running goals whose agent reports knowledge-base writes waiting (status.knowledgeBacklog), and of
those, waiting because PostgreSQL's disk is full: tallies, not written to the Agent's status."""


def goal_agent(raw: Raw) -> str | None:
    """The Agent a goal runs on: the one dispatch chose, else the one it names."""
    status = raw.get("status") or {}
    return status.get("agent") or ((raw.get("spec") or {}).get("agentRef") or {}).get("name")


def _ns(raw: Raw) -> str:
    return raw["metadata"].get("namespace") or ""


def _goal_by_agent(raw: Raw) -> Iterable[Hashable]:
    agent = goal_agent(raw)
    return ((_ns(raw), agent),) if agent else ()


def _goal_queued(raw: Raw) -> Iterable[Hashable]:
    status = raw.get("status") or {}
    agent = status.get("agent")
    return ((_ns(raw), agent),) if agent and status.get("phase") == Phase.QUEUED.value else ()


def _goal_counts(raw: Raw) -> tuple[Hashable, dict[str, int]] | None:
    agent = goal_agent(raw)
    if not agent:
        return None
    status = raw.get("status") or {}
    amounts = {"tokensUsed": int((status.get("tokens") or {}).get("total") or 0)}
    category = RUNNING_PHASES.get(str(status.get("phase")))
    if category:
        amounts[category] = 1
    backlog = status.get("knowledgeBacklog")
    if backlog and category == "runningGoals":  # a goal that ended has no agent left to report it cleared
        amounts[BACKLOG_GOALS] = 1
        if backlog.get("reason") == "DiskFull":
            amounts[DISK_FULL_GOALS] = 1
    return (_ns(raw), agent), amounts


def _pod_label(label: str, live_only: bool = False) -> Indexer:
    def indexer(raw: Raw) -> Iterable[Hashable]:
        value = (raw["metadata"].get("labels") or {}).get(label)
        if not value or (live_only and pod_outcome(raw).state != "live"):
            return ()
        return ((_ns(raw), value),)
    return indexer


def slim_object(raw: Raw) -> Raw:
    """An object's metadata (without managedFields) and status: what the operator reads of a
    workspace claim."""
    meta = {k: v for k, v in raw["metadata"].items() if k != "managedFields"}
    return {"apiVersion": raw.get("apiVersion"), "kind": raw.get("kind"), "metadata": meta,
            "status": raw.get("status") or {}}


def _state(state: dict[str, Any]) -> dict[str, Any]:
    """Of a container's state, what pod_outcome and agent_started read."""
    kept: dict[str, Any] = {}
    if (waiting := state.get("waiting")) is not None:
        kept["waiting"] = {k: _intern(waiting[k]) for k in ("reason", "message") if k in waiting}
    if (terminated := state.get("terminated")) is not None:
        kept["terminated"] = {k: _intern(terminated[k]) for k in ("exitCode", "reason") if k in terminated}
    if (running := state.get("running")) is not None:
        kept["running"] = {k: running[k] for k in ("startedAt",) if k in running}
    return kept


def _intern(value: Any) -> Any:
    # Namespaces, agent names, label keys, phases and reasons repeat across thousands of pods;
    # each decoded copy would cost its own string.
    return sys.intern(value) if isinstance(value, str) and len(value) <= 80 else value


def _intern_tree(value: Any) -> None:
    """Intern, in place, the short strings of a decoded JSON tree: a goal's condition types,
    reasons, messages and timestamps repeat within it and across thousands of goals."""
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for k, v in items:
        if isinstance(v, str):
            if len(v) <= 80:
                value[k] = sys.intern(v)
        elif isinstance(v, (dict, list)):
            _intern_tree(v)


def slim_pod(raw: Raw) -> Raw:
    """What the operator reads of a goal or warm pod: its names, labels, owners and deletion, the
    phase and the containers' states, and of a warm pod its template and Ready condition. A cache
    holds every goal pod, finished ones too: with the rest of each pod's status (conditions,
    images, IPs) and metadata it cost some 9-14 KB a pod."""
    meta = raw["metadata"]
    kept: dict[str, Any] = {k: _intern(meta[k]) for k in ("name", "namespace", "uid", "resourceVersion",
                                                           "creationTimestamp", "deletionTimestamp") if k in meta}
    kept["labels"] = {_intern(k): _intern(v) for k, v in (meta.get("labels") or {}).items()}
    template = (meta.get("annotations") or {}).get(WARM_TEMPLATE)
    if template is not None:
        kept["annotations"] = {WARM_TEMPLATE: _intern(template)}
    owners = meta.get("ownerReferences")
    if owners:
        kept["ownerReferences"] = [{"uid": ref.get("uid")} for ref in owners]
    status = raw.get("status") or {}
    slim: dict[str, Any] = {k: _intern(status[k]) for k in ("phase", "reason") if k in status}
    if template is not None:  # only the warm pool asks whether a pod is Ready
        ready = [{"type": "Ready", "status": _intern(c.get("status"))} for c in status.get("conditions") or []
                 if c.get("type") == "Ready"]
        if ready:
            slim["conditions"] = ready
    containers = status.get("containerStatuses")
    if containers:
        slim["containerStatuses"] = [{"name": _intern(cs.get("name")), "state": _state(cs.get("state") or {})}
                                     for cs in containers]
    return {"apiVersion": _intern(raw.get("apiVersion")), "kind": _intern(raw.get("kind")), "metadata": kept,
            "status": slim}


def _kept(entry: dict[str, Any]) -> dict[str, Any] | None:
    """Of a managedFields entry, the manager, its time and whether it set annotations (which keys),
    status.phase or status.decisions; None if none of these."""
    fields = entry.get("fieldsV1") or {}
    annotations = (fields.get("f:metadata") or {}).get("f:annotations")
    status: dict[str, Any] = {k: {} for k in ("f:phase", "f:decisions") if k in (fields.get("f:status") or {})}
    if annotations is None and not status:
        return None
    shape = (tuple(annotations) if annotations is not None else None, tuple(status))
    kept = _SHAPES.get(shape)
    if kept is None:
        kept = {}
        if annotations is not None:
            kept["f:metadata"] = {"f:annotations": {k: {} for k in annotations}}
        if status:
            kept["f:status"] = status
        if len(_SHAPES) < 1024:  # few shapes recur: every goal's operator entry is the same one
            _SHAPES[shape] = kept
    return {"manager": _intern(entry.get("manager", "")), "time": _intern(entry.get("time")), "fieldsV1": kept}


# The trimmed field trees of managedFields entries, shared by every goal that has one (read only).
_SHAPES: dict[tuple[tuple[str, ...] | None, tuple[str, ...]], dict[str, Any]] = {}


def slim_goal(raw: Raw) -> Raw:
    """A goal with only the managedFields entries that say when an annotation was set
    (overseer.approvals.set_by) and who wrote status.phase and status.decisions (trust.py), each
    without the rest of its field tree (the operator's own names every status field it writes),
    and its short strings interned."""
    meta = raw["metadata"]
    fields = meta.pop("managedFields", None)
    _intern_tree(raw)
    if fields:
        meta["managedFields"] = [e for e in map(_kept, fields) if e is not None]
    return raw


def new_stores() -> dict[str, Store]:
    """The caches of the watched kinds and the questions reconcilers ask of them."""
    return {
        "goals": Store(
            indexers={"agent": _goal_by_agent, "queued": _goal_queued, "namespace": lambda g: (_ns(g),),
                      "dependency": lambda g: [(_ns(g), d) for d in (g.get("spec") or {}).get("dependsOn") or []],
                      "parent": lambda g: [(_ns(g), p)] if (p := (g.get("spec") or {}).get("parent")) else []},
            tallies={"agent": _goal_counts}),
        "agents": Store(indexers={"namespace": lambda a: (_ns(a),)}),
        "capabilities": Store(indexers={"namespace": lambda c: (_ns(c),)}),
        "pods": Store(indexers={"goal": _pod_label(LABEL_GOAL), "agent": _pod_label(LABEL_AGENT),
                                "live": _pod_label(LABEL_AGENT, live_only=True)}),
        # idle pods of the Agents' warm pools (warm_pool.py); a claimed one moves to "pods"
        "warmpods": Store(indexers={"agent": _pod_label(LABEL_AGENT)}),
        # goals' workspace claims, by name: a goal's own and its workspaceFrom dependency's
        "persistentvolumeclaims": Store(),
        # Agents' modifications ConfigMaps, by name
        "configmaps": Store(),
        # the kubernetes Service's, when OVERSEER_API_SERVER_CIDRS does not say where the API server is
        "endpointslices": Store(),
    }


@dataclass
class Runtime:
    """One per operator process. The stores are kept current by the informers and complete
    before any reconcile runs, so reconcilers never re-read what a watch delivered."""

    kube: Kube
    settings: Settings
    events: EventRecorder
    knowledge: KnowledgeTenants | None = None  # with OVERSEER_KNOWLEDGE_ADMIN_URL
    redis: RedisSecrets | None = None  # with OVERSEER_AGENT_REDIS_URL
    stores: dict[str, Store] = field(default_factory=new_stores)
    goals: WorkQueue = field(default_factory=lambda: WorkQueue("goal"))
    agents: WorkQueue = field(default_factory=lambda: WorkQueue("agent"))
    capabilities: WorkQueue = field(default_factory=lambda: WorkQueue("capability"))
    # Pods created but not yet seen by the watch, per (namespace, agent): counted as running so
    # a burst of reconciles cannot overshoot maxConcurrentGoals.
    inflight: dict[Key, set[str]] = field(default_factory=lambda: defaultdict(set))
    # Warm pods claimed or being deleted, (namespace, name), until the watch shows them leave the pool.
    warm_taken: set[tuple[str, str]] = field(default_factory=set)
    # Warm pods created but not seen by the watch yet, per (namespace, agent): name -> when (monotonic).
    warm_starting: dict[Key, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))
    # Our own status writes, by uid: (resourceVersion the write was based on, object it returned).
    # Until the watch catches up, a reconcile sees what it wrote, not the stale copy, and so
    # neither writes nor announces the same transition twice.
    written: dict[str, tuple[str, Raw]] = field(default_factory=dict)
    # Where goal pods reach the API server (their NetworkPolicy), None while unknown.
    api_server: APIServerEgress | None = None
    # The status.decisions the operator last wrote, by goal uid (trust.trusted_decisions).
    decisions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # Whether the shipped admission policies are in the cluster (admission.check).
    admission: PolicyState = field(default_factory=PolicyState)
    # The model gateway's price table (condition PriceKnown), from OVERSEER_GATEWAY_PRICES_FILE.
    prices: PriceTable = field(default_factory=PriceTable)

    def _fresh(self, raw: Raw) -> Raw:
        uid = raw["metadata"].get("uid")
        entry = self.written.get(uid) if uid else None
        if entry is None:
            return raw
        based_on, result = entry
        # The watch has not shown our write yet; once it does, forget() drops the entry.
        return result if raw["metadata"].get("resourceVersion") == based_on else raw

    def forget(self, event: str, raw: Raw) -> None:
        """Drop our copy of a status write once the watch shows it or anything newer."""
        uid = raw["metadata"].get("uid")
        entry = self.written.get(uid)
        if entry is not None and (event == "DELETED" or raw["metadata"].get("resourceVersion") != entry[0]):
            del self.written[uid]

    def is_own_write(self, raw: Raw) -> bool:
        """Whether this version of the object is exactly the one our last status write produced."""
        entry = self.written.get(raw["metadata"].get("uid") or "")
        return entry is not None and entry[1]["metadata"].get("resourceVersion") == raw["metadata"].get("resourceVersion")

    def one(self, kind: str, key: Key) -> Raw | None:
        raw = self.stores[kind].get(key)
        return self._fresh(raw) if raw is not None else None

    def by(self, kind: str, index: str, value: Hashable) -> list[Raw]:
        return [self._fresh(raw) for raw in self.stores[kind].by(index, value)]

    def event_owner(self, raw: Raw) -> Raw | None:
        """The Agent a burst of a goal's Events folds into (EventRecorder.fold_into)."""
        agent = goal_agent(raw) if raw.get("kind") == "Goal" else None
        return self.one("agents", (_ns(raw), agent)) if agent else None

    def keys(self, kind: str) -> list[Key]:
        return self.stores[kind].keys()

    def live_pods_of_agent(self, ns: str, agent: str) -> int:
        """The agent's pods that run, including those created but not seen by the watch yet."""
        # A pod leaves `inflight` with its first watch event (Operator.pod_changed), so the two
        # never count the same pod.
        return self.stores["pods"].count("live", (ns, agent)) + len(self.inflight.get((ns, agent), ()))

    def goal_counts(self, ns: str, agent: str) -> dict[str, int]:
        tally = self.stores["goals"].tally("agent", (ns, agent))
        return {name: tally.get(name, 0) for name in GOAL_COUNTS}

    def knowledge_backlogs(self, ns: str, agent: str) -> list[Raw]:
        """The agent's running goals that report knowledge-base writes waiting (rarely any: the tally
        answers first, so an Agent of thousands of goals is not scanned on every change)."""
        if not self.stores["goals"].tally("agent", (ns, agent)).get(BACKLOG_GOALS):
            return []
        return sorted((g for g in self.stores["goals"].by("agent", (ns, agent))
                       if (g.get("status") or {}).get("knowledgeBacklog")
                       and RUNNING_PHASES.get(str(g["status"].get("phase"))) == "runningGoals"),
                      key=lambda g: g["metadata"]["name"])

    async def patch_status(self, url: str, raw: Raw, changes: dict[str, Any]) -> bool:
        """Merge-patch only the status fields that differ from the freshest known copy.
        Returns whether anything was written."""
        current = raw.get("status") or {}
        delta = {k: v for k, v in changes.items() if current.get(k) != v}
        if not delta:
            return False
        result = await self.kube.merge_patch(url, {"status": delta})
        uid = raw["metadata"].get("uid")
        if result is not None and uid:
            # Kept as the goal cache keeps goals: after a restart thousands of writes can wait here
            # for a lagging watch.
            kept = slim_goal(result) if result.get("kind") == "Goal" else result
            self.written[uid] = (raw["metadata"].get("resourceVersion"), kept)
        return True


def goal_path(namespace: str, name: str | None = None, subresource: str | None = None) -> str:
    return path(API_VERSION, "goals", namespace, name, subresource)


def agent_path(namespace: str, name: str | None = None, subresource: str | None = None) -> str:
    return path(API_VERSION, "agents", namespace, name, subresource)


def capability_path(namespace: str, name: str | None = None, subresource: str | None = None) -> str:
    return path(API_VERSION, "capabilities", namespace, name, subresource)
