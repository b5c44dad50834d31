"""Events in a burst, as a user reads them: a goal applied alone shows its own Event; a thousand
applied at once do not cost a thousand Event writes, and still show in `kubectl events`."""

from __future__ import annotations

import json
import re

from e2e.harness import wait_for
from e2e.world import GOAL, World

BURST = 30
OWN_EVENTS = 10  # operator/overseer/operator/events.py FOLD_BURST


def test_a_burst_of_goals_shows_as_one_counted_event_on_their_agent(world: World) -> None:
    world.agent("coder", max=BURST)
    world.wait_condition("agent", "coder", "Ready", "True")
    names = [f"burst-{i:02d}" for i in range(BURST)]
    world.apply("\n---\n".join(GOAL.format(name=n, agent="agentRef: {name: coder}", priority=0, depends="[]",
                                           retries=0, extra="", description=json.dumps("Fix the flaky test."))
                               for n in names))
    wait_for(lambda: sum((g.get("status") or {}).get("phase") == "Running" for g in world.items("goals")) == BURST,
             timeout=60, description=f"all {BURST} goals Running")

    def dispatched() -> tuple[list[str], dict | None]:
        events = [e for e in world.items("events") if e["reason"] == "Dispatched"]
        own = [e["involvedObject"]["name"] for e in events if e["involvedObject"]["kind"] == "Goal"]
        burst = next((e for e in events if e["involvedObject"]["kind"] == "Agent"), None)
        return own, burst

    # Every goal is counted once: in its own Event or in the Agent's (written within a few seconds).
    own, burst = wait_for(lambda: (d := dispatched())[1] and len(d[0]) + d[1]["count"] == BURST and d,
                          timeout=30, description=f"{BURST} dispatches counted in Events")
    assert len(own) >= OWN_EVENTS and set(own) <= set(names)
    assert burst["involvedObject"]["name"] == "coder" and burst["involvedObject"]["uid"]
    folded = set(names) - set(own)
    shown = re.fullmatch(rf"Dispatched for {burst['count']} goals of this agent in a burst \((\S+) … (\S+); "
                         r"each goal's conditions say when\); latest, goal (\S+): attempt 1 running in pod (\S+) "
                         r"as overseer-agent-coder", burst["message"])
    assert shown, burst["message"]
    first, latest, latest_again, pod = shown.groups()
    assert {first, latest} <= folded and latest_again == latest and pod.startswith(latest)

    # kubectl shows the burst on the Agent; a folded goal still says when it was dispatched.
    assert f"{burst['count']} goals of this agent" in world.kubectl("describe", "agent", "coder", "-n", world.ns).stdout
    assert "agent/coder" in world.kubectl("events", "-n", world.ns).stdout.lower()
    goal = world.get("goal", latest)
    assert goal is not None
    dispatched_condition = next(c for c in goal["status"]["conditions"] if c["type"] == "Dispatched")
    assert dispatched_condition["status"] == "True" and dispatched_condition["lastTransitionTime"]
