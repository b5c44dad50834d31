"""A light kubelet's part for goal pods, for scenarios that run hundreds of goals: no agent process
(each would cost seconds of CPU at start), but what an agent's container would do that the operator
sees. A Running goal pod is held a moment, then exits with the code its goal's plan gives for that
attempt (the pod is annotated overseer.dev/exit-code and kwok reports the phase, as e2e/agent_runner.py
does); a goal planned to spawn a sub-goal creates it with its pod's own ServiceAccount token, as its
agent would, and exits once the sub-goal has ended.
"""

from __future__ import annotations

import random
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from e2e.harness import EXIT_CODE_ANNOTATION, Cluster, K8s

from .ledger import LABEL_ATTEMPT, LABEL_GOAL, TERMINAL, follow_goal_pods

SUBGOAL_LOOK = 1.0  # seconds between reads of a waiting parent's sub-goal


@dataclass
class GoalPlan:
    """What the container of each attempt of one goal does."""

    exits: list[int] = field(default_factory=lambda: [0])  # exit code per attempt; the last repeats
    hold: float = 1.0                                     # seconds a pod runs before it exits
    subgoal: str | None = None                            # the name of the sub-goal it spawns, if any

    def exit_code(self, attempt: int) -> int:
        return self.exits[min(attempt, len(self.exits)) - 1]


class StandInKubelet:
    """Plays the containers of a namespace's goal pods from plans (goal name -> GoalPlan) until stop().

    It follows the pods with a watch of its own (listing thousands of pods every tick would cost
    more than the operator under test) and sends the exit-code patches from a small pool, so ten
    thousand goals end at the pace the operator and kwok set, not this loop's."""

    def __init__(self, cluster: Cluster, k8s: K8s, namespace: str, plans: dict[str, GoalPlan],
                 interval: float = 0.3, writers: int = 4):
        self.cluster, self.k8s, self.namespace, self.plans = cluster, k8s, namespace, plans
        self.interval = interval
        self.pods: dict[str, Any] = {}             # uid -> the latest Running goal pod not yet exited
        self.running_since: dict[str, float] = {}  # pod uid -> when first seen Running
        self.exited: set[str] = set()              # pod uids annotated with their exit code
        self.spawned: set[str] = set()             # goals whose sub-goal was created
        self.look_again: dict[str, float] = {}     # parent goal -> when to read its sub-goal's phase again
        self.errors = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._writers = ThreadPoolExecutor(writers, thread_name_prefix=f"stand-in-kubelet-{namespace}")
        self._threads = [threading.Thread(target=self._watch, name=f"stand-in-kubelet-watch-{namespace}", daemon=True),
                         threading.Thread(target=self._loop, name=f"stand-in-kubelet-{namespace}", daemon=True)]

    def start(self) -> "StandInKubelet":
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=15)
        self._writers.shutdown(wait=True, cancel_futures=True)

    def _error(self, e: Exception) -> None:
        self.errors += 1
        if self.errors % 50 == 1:
            print(f"stand-in kubelet {self.namespace}: {type(e).__name__}: {e}", file=sys.stderr)

    def _see(self, pod: Any, deleted: bool = False) -> None:
        uid = pod.metadata.uid
        with self._lock:
            if deleted or pod.status.phase != "Running" or pod.metadata.deletion_timestamp or uid in self.exited \
                    or EXIT_CODE_ANNOTATION in (pod.metadata.annotations or {}):
                self.pods.pop(uid, None)
            else:
                self.pods[uid] = pod

    def _watch(self) -> None:
        def relisted(present: set[str]) -> None:
            with self._lock:  # deleted while the watch was down
                self.pods = {u: p for u, p in self.pods.items() if u in present}

        follow_goal_pods(self.k8s, self.namespace, self._stop, self._see, relisted, self._error)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._tick()
            except Exception as e:  # noqa: BLE001 - the API server may be restarting; keep going
                self._error(e)
            self._stop.wait(self.interval)

    def _tick(self) -> None:
        now = time.monotonic()
        with self._lock:
            pods = list(self.pods.values())
        for pod in pods:
            uid, goal = pod.metadata.uid, pod.metadata.labels[LABEL_GOAL]
            plan = self.plans.get(goal, GoalPlan())
            since = self.running_since.setdefault(uid, now)
            if plan.subgoal:
                if goal not in self.spawned:
                    self._spawn(pod, goal, plan.subgoal)
                    self.spawned.add(goal)
                    continue
                if now < self.look_again.get(goal, 0.0):
                    continue
                self.look_again[goal] = now + SUBGOAL_LOOK
                if self._phase(plan.subgoal) not in TERMINAL:
                    continue  # the parent waits for its sub-goal, as spawn_subgoal's caller does
            elif now - since < plan.hold:
                continue
            code = plan.exit_code(int(pod.metadata.labels.get(LABEL_ATTEMPT, "1")))
            with self._lock:
                self.exited.add(uid)
                self.pods.pop(uid, None)
            self._writers.submit(self._exit, pod.metadata.name, uid, code)

    def _exit(self, name: str, uid: str, code: int) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self.k8s.core.patch_namespaced_pod(name, self.namespace,
                                               {"metadata": {"annotations": {EXIT_CODE_ANNOTATION: str(code)}}})
        except ApiException as e:
            if e.status == 404:  # deleted meanwhile
                return
            self._retry(uid, e)
        except Exception as e:  # noqa: BLE001 - the API server may be restarting
            self._retry(uid, e)

    def _retry(self, uid: str, e: Exception) -> None:
        """The patch failed: play the pod again on its next watch event or tick."""
        self._error(e)
        with self._lock:
            self.exited.discard(uid)

    def _phase(self, goal: str) -> str | None:
        from kubernetes.client.exceptions import ApiException

        try:
            g = self.k8s.custom.get_namespaced_custom_object("overseer.dev", "v1alpha1", self.namespace, "goals", goal)
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        return (g.get("status") or {}).get("phase")

    def _spawn(self, pod: Any, parent: str, name: str) -> None:
        """Create the sub-goal as the parent's agent would: with a token of the pod's ServiceAccount."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(
            audiences=[], expiration_seconds=600, bound_object_ref=client.V1BoundObjectReference(
                kind="Pod", api_version="v1", name=pod.metadata.name, uid=pod.metadata.uid)))
        token = self.k8s.core.create_namespaced_service_account_token(
            pod.spec.service_account_name, self.namespace, request).status.token
        cfg = client.Configuration(host=self.cluster.api_url, api_key={"authorization": f"Bearer {token}"})
        cfg.ssl_ca_cert = str(self.cluster.run_dir / "pki" / "ca.crt")
        cfg.no_proxy = "127.0.0.1,localhost"
        agent = pod.metadata.labels["overseer.dev/agent"]
        owner = next(ref for ref in pod.metadata.owner_references or [] if ref.kind == "Goal")
        body = {"apiVersion": "overseer.dev/v1alpha1", "kind": "Goal",
                "metadata": {"name": name, "labels": {"overseer.dev/parent": parent},
                             "ownerReferences": [{"apiVersion": "overseer.dev/v1alpha1", "kind": "Goal",
                                                  "name": parent, "uid": owner.uid}]},
                "spec": {"description": f"A part of {parent}", "agentRef": {"name": agent}, "parent": parent,
                         "budget": {"maxTokensPerGoal": 1000}}}
        with client.ApiClient(cfg) as api:
            try:
                client.CustomObjectsApi(api).create_namespaced_custom_object(
                    "overseer.dev", "v1alpha1", self.namespace, "goals", body)
            except ApiException as e:
                if e.status != 409:  # created before a restart of this loop: as the agent's resume finds it
                    raise


def plans(names: list[str], rng: random.Random, subgoal_share: float = 0.05, retry_share: float = 0.1,
          fail_share: float = 0.05, hold: tuple[float, float] = (0.3, 2.0)) -> dict[str, GoalPlan]:
    """Plans for goals: most succeed at once, some fail once and succeed on the retry, some fail
    for good, some spawn a sub-goal (named NAME-sub) and wait for it."""
    out: dict[str, GoalPlan] = {}
    for name in names:
        roll = rng.random()
        plan = GoalPlan(hold=rng.uniform(*hold))
        if roll < subgoal_share:
            plan.subgoal = f"{name}-sub"
        elif roll < subgoal_share + retry_share:
            plan.exits = [1, 0]
        elif roll < subgoal_share + retry_share + fail_share:
            plan.exits = [3]
        out[name] = plan
    return out
