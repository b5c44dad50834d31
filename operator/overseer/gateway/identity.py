"""Who is calling: a pod-bound ServiceAccount token -> the goal pod -> its Goal and Agent.

The API server reviews each new token (TokenReview, audience overseer-gateway) and names the
pod it is bound to; the pod's labels and its controlling owner reference name the Goal. The
Goal is never taken from anything the caller sends, so a token of one goal's pod cannot spend
another goal's budget. A sub-goal's call also counts against the per-goal budget of each goal
above it (spec.parent, up to MAX_SUBGOAL_DEPTH levels), so those are read too, with their Agents'
budgets. Answers, refusals included, are cached for a short while.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from async_lru import alru_cache

from overseer.api import API_VERSION
from overseer.api.gateway import AUDIENCE
from overseer.api.meta import LABEL_AGENT, LABEL_GOAL, MAX_SUBGOAL_DEPTH
from overseer.kube import ApiError, Kube, path

from .errors import GatewayError

POD_NAME = "authentication.kubernetes.io/pod-name"
POD_UID = "authentication.kubernetes.io/pod-uid"
SA_PREFIX = "system:serviceaccount:"


@dataclass(frozen=True, slots=True)
class Ancestor:
    """A goal above the caller's (its parent, the parent's parent...): its calls' spend includes the caller's."""

    goal: str
    goal_uid: str
    budget: dict[str, Any]  # its per-goal budget: its own spec.budget over its Agent's


@dataclass(frozen=True, slots=True)
class Caller:
    """A goal pod whose token the API server vouched for."""

    namespace: str
    pod: str
    goal: str
    goal_uid: str
    agent: str
    budget: dict[str, Any] | None = None  # the Goal's spec.budget
    ancestors: tuple[Ancestor, ...] = ()  # parent first

    @property
    def goal_key(self) -> str:
        return f"{self.namespace}/{self.goal}"


def _refused(message: str) -> GatewayError:
    return GatewayError(401, message)


def _forbidden(message: str) -> GatewayError:
    return GatewayError(403, message)


class Identity:
    """Turns bearer tokens into Callers with TokenReview and cached reads of pods and Goals."""

    def __init__(self, kube: Kube, cache_seconds: float, max_entries: int = 8192) -> None:
        self._kube = kube
        # Refusals are returned, not raised, so they are cached too: a stream of bad tokens
        # does not become a stream of TokenReviews.
        self._resolve = alru_cache(maxsize=max_entries, ttl=cache_seconds or None)(self._caller)
        self._no_cache = cache_seconds == 0

    async def caller(self, token: str) -> Caller:
        """The caller a token belongs to; GatewayError (401/403/503) when it cannot be trusted."""
        if not token:
            raise _refused("x-api-key or Authorization: Bearer must carry the pod's gateway token")
        if self._no_cache:
            found = await self._caller(token)
        else:
            found = await self._resolve(token)
        if isinstance(found, GatewayError):
            raise found
        return found

    async def _caller(self, token: str) -> Caller | GatewayError:
        try:
            return await self._identify(token)
        except GatewayError as refusal:
            return refusal
        except ApiError as e:
            if e.status in (401, 403):  # the gateway's own credentials are wrong: say so, do not cache
                raise GatewayError(503, f"the gateway cannot review tokens ({e.status} {e.reason}): "
                                        "its ServiceAccount needs create on tokenreviews and get on pods "
                                        "and goals") from e
            raise GatewayError(503, f"the gateway cannot reach the Kubernetes API: {e}") from e

    async def _identify(self, token: str) -> Caller:
        review = await self._kube.request("POST", "/apis/authentication.k8s.io/v1/tokenreviews", body={
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
            "spec": {"token": token, "audiences": [AUDIENCE]}})
        status = review.get("status") or {}
        if not status.get("authenticated") or AUDIENCE not in (status.get("audiences") or []):
            raise _refused(f"token rejected by the Kubernetes API (audience {AUDIENCE} expected): "
                           f"{status.get('error') or 'not authenticated'}")
        user = status.get("user") or {}
        username: str = user.get("username", "")
        extra: dict[str, list[str]] = user.get("extra") or {}
        if not username.startswith(SA_PREFIX) or not extra.get(POD_NAME) or not extra.get(POD_UID):
            raise _refused(f"{username}: only a ServiceAccount token bound to a goal pod is accepted")
        namespace, service_account = username[len(SA_PREFIX):].split(":", 1)
        pod_name, pod_uid = extra[POD_NAME][0], extra[POD_UID][0]
        pod = await self._kube.get(path("v1", "pods", namespace, pod_name))
        if pod is None or pod["metadata"].get("uid") != pod_uid:
            raise _refused(f"pod {namespace}/{pod_name} of this token no longer exists")
        labels = pod["metadata"].get("labels") or {}
        goal_name, agent_name = labels.get(LABEL_GOAL), labels.get(LABEL_AGENT)
        if not goal_name or not agent_name or pod["spec"].get("serviceAccountName") != service_account:
            raise _forbidden(f"pod {namespace}/{pod_name} is not a goal pod (labels {LABEL_GOAL} and "
                             f"{LABEL_AGENT} name its Goal and Agent)")
        owner = _goal_owner(pod)
        if owner is None or owner.get("name") != goal_name:
            raise _forbidden(f"pod {namespace}/{pod_name} is not controlled by Goal {goal_name}")
        goal = await self._kube.get(path(API_VERSION, "goals", namespace, goal_name))
        if goal is None or goal["metadata"].get("uid") != owner.get("uid"):
            raise _forbidden(f"Goal {namespace}/{goal_name} of pod {pod_name} no longer exists")
        assigned = (goal.get("status") or {}).get("agent")
        if assigned and assigned != agent_name:
            raise _forbidden(f"Goal {namespace}/{goal_name} is assigned to Agent {assigned}, "
                             f"not to {agent_name} of pod {pod_name}")
        return Caller(namespace, pod_name, goal_name, goal["metadata"]["uid"], agent_name,
                      (goal.get("spec") or {}).get("budget"), await self._ancestors(namespace, goal))

    async def _ancestors(self, namespace: str, goal: dict[str, Any]) -> tuple[Ancestor, ...]:
        """The goals above goal by spec.parent, parent first; the walk stops at a parent that is gone
        (the operator fails such a sub-goal ParentNotFound), at a loop, and past MAX_SUBGOAL_DEPTH."""
        found: list[Ancestor] = []
        seen = {goal["metadata"]["uid"]}
        agents: dict[str, dict[str, Any]] = {}
        while len(found) < MAX_SUBGOAL_DEPTH and (parent_name := (goal.get("spec") or {}).get("parent")):
            parent = await self._kube.get(path(API_VERSION, "goals", namespace, parent_name))
            if parent is None or parent["metadata"]["uid"] in seen:
                break
            seen.add(parent["metadata"]["uid"])
            agent_name = (parent.get("status") or {}).get("agent") or ""
            if agent_name and agent_name not in agents:
                agent = await self._kube.get(path(API_VERSION, "agents", namespace, agent_name))
                agents[agent_name] = ((agent or {}).get("spec") or {}).get("budget") or {}
            own = (parent.get("spec") or {}).get("budget") or {}
            merged = {**agents.get(agent_name, {}), **{k: v for k, v in own.items() if v is not None}}
            found.append(Ancestor(parent_name, parent["metadata"]["uid"], merged))
            goal = parent
        return tuple(found)


def _goal_owner(pod: dict[str, Any]) -> dict[str, Any] | None:
    for ref in pod["metadata"].get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") == "Goal" and ref.get("apiVersion") == API_VERSION:
            return ref
    return None


def bearer_token(headers: Any) -> str:
    """The token from x-api-key (what ANTHROPIC_API_KEY sends) or Authorization: Bearer."""
    token = headers.get("x-api-key")
    if token:
        return str(token)
    auth = headers.get("authorization", "")
    return auth[7:].strip() if auth[:7].lower() == "bearer " else ""
