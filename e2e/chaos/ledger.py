"""What a fault scenario counts: every goal pod ever seen (a watch of its own, independent of the
operator's), and how each goal ended.

A goal is counted twice-run ("duplicate pods") when two of its pods were live at the same moment,
or when one attempt had two pods (same name, another uid: the attempt's work started again from
nothing). A goal is lost when it never ended, ended without a reason, or vanished.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from e2e.harness import K8s

LABEL_GOAL = "overseer.dev/goal"
LABEL_ATTEMPT = "overseer.dev/attempt"
TERMINAL = ("Succeeded", "Failed", "Cancelled")


def _live(pod: Any) -> bool:
    return pod.metadata.deletion_timestamp is None and pod.status.phase not in ("Succeeded", "Failed")


class PodLedger:
    """Watches a namespace's goal pods from start() to stop(); survives API server restarts (it
    lists again and carries on from what it saw)."""

    def __init__(self, k8s: K8s, namespace: str):
        self.k8s = k8s
        self.namespace = namespace
        self.live: dict[str, dict[str, str]] = defaultdict(dict)       # goal -> {pod uid: pod name}
        self.uids: dict[tuple[str, str], set[str]] = defaultdict(set)  # (goal, attempt) -> pod uids
        self.overlaps: set[str] = set()                                # goals with two live pods at once
        self.pods_seen = 0
        self.restarts = 0                                             # watches the ledger had to start again
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"pod-ledger-{namespace}", daemon=True)

    def start(self) -> "PodLedger":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def _see(self, pod: Any, deleted: bool = False) -> None:
        labels = pod.metadata.labels or {}
        goal, attempt, uid = labels.get(LABEL_GOAL), labels.get(LABEL_ATTEMPT, "?"), pod.metadata.uid
        if not goal:
            return
        with self._lock:
            if uid not in self.uids[(goal, attempt)]:
                self.pods_seen += 1
            self.uids[(goal, attempt)].add(uid)
            if not deleted and _live(pod):
                self.live[goal][uid] = pod.metadata.name
                if len(self.live[goal]) > 1:
                    self.overlaps.add(goal)
            else:
                self.live[goal].pop(uid, None)

    def _run(self) -> None:
        def relisted(present: set[str]) -> None:
            with self._lock:  # pods deleted while the watch was down are no longer live
                for goal in self.live:
                    self.live[goal] = {u: n for u, n in self.live[goal].items() if u in present}

        def failed(_: Exception) -> None:
            self.restarts += 1

        follow_goal_pods(self.k8s, self.namespace, self._stop, self._see, relisted, failed)

    def duplicates(self) -> set[str]:
        """Goals that had two live pods at once, or two pods for one attempt."""
        with self._lock:
            twice = {goal for (goal, _), uids in self.uids.items() if len(uids) > 1}
            return self.overlaps | twice


def follow_goal_pods(k8s: K8s, namespace: str, stop: threading.Event, see: Callable[[Any, bool], None],
                     relisted: Callable[[set[str]], None], failed: Callable[[Exception], None]) -> None:
    """Until stop: list the namespace's goal pods, say which uids are present (relisted), pass each
    pod and then each watch event to see(pod, deleted); list again after any error (the API server
    may be restarting), half a second later."""
    from kubernetes import watch

    core = k8s.core
    while not stop.is_set():
        try:
            listed = core.list_namespaced_pod(namespace, label_selector=LABEL_GOAL)
            relisted({p.metadata.uid for p in listed.items})
            for pod in listed.items:
                see(pod, False)
            w = watch.Watch()
            for event in w.stream(core.list_namespaced_pod, namespace, label_selector=LABEL_GOAL,
                                  resource_version=listed.metadata.resource_version, timeout_seconds=30,
                                  _request_timeout=40):
                see(event["object"], event["type"] == "DELETED")
                if stop.is_set():
                    w.stop()
                    break
        except Exception as e:  # noqa: BLE001 - the API server may be down; list again
            failed(e)
            stop.wait(0.5)


@dataclass
class Tally:
    goals_in: int = 0
    finished: int = 0
    failed: int = 0
    lost: list[str] = field(default_factory=list)
    reasons: Counter[str] = field(default_factory=Counter)


def reason_of(goal: dict[str, Any]) -> str | None:
    """Why a goal ended: its Complete condition's reason."""
    for c in (goal.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Complete":
            return c.get("reason") or None
    return None


def goals(k8s: K8s, namespace: str) -> dict[str, dict[str, Any]]:
    items = k8s.custom.list_namespaced_custom_object("overseer.dev", "v1alpha1", namespace, "goals")["items"]
    return {g["metadata"]["name"]: g for g in items}


def tally(k8s: K8s, namespace: str, names: list[str]) -> Tally:
    """How the named goals ended; one that is not there, not ended, or ended with no reason is lost."""
    present = goals(k8s, namespace)
    t = Tally(goals_in=len(names))
    for name in names:
        g = present.get(name)
        phase = ((g or {}).get("status") or {}).get("phase")
        reason = reason_of(g) if g else None
        if phase not in TERMINAL or reason is None:
            t.lost.append(name)
        elif phase == "Succeeded":
            t.finished += 1
        else:
            t.failed += 1
            t.reasons[reason] += 1
    return t


def wait_ended(k8s: K8s, namespace: str, names: list[str], timeout: float, interval: float = 2.0) -> float:
    """Wait until every named goal is in a terminal phase, or timeout; returns the seconds waited."""
    start = time.monotonic()
    wanted = set(names)
    while time.monotonic() - start < timeout:
        try:
            present = goals(k8s, namespace)
        except Exception:  # noqa: BLE001 - the API server may be restarting
            time.sleep(interval)
            continue
        if all(((present.get(n) or {}).get("status") or {}).get("phase") in TERMINAL for n in wanted):
            break
        time.sleep(interval)
    return time.monotonic() - start
