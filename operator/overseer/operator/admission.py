"""Whether the admission policies Overseer ships are in the cluster.

They make approvals need verb `approve` and record the API server's name of the approver, and
confine agents to their own goals (charts/overseer/files/admission). Without them approvals
still work, recorded as unverified, and every Agent carries condition AdmissionPolicies=False
saying which are missing.
"""

from __future__ import annotations

from dataclasses import dataclass

from overseer.kube import ApiError, Kube

GROUP_VERSION = "admissionregistration.k8s.io/v1"
# Each policy has a binding of the same name.
POLICIES = {
    "validatingadmissionpolicies": ("overseer-approvals", "overseer-agent-confinement", "overseer-agent-subgoals"),
    "mutatingadmissionpolicies": ("overseer-decided-by", "overseer-goal-creator"),
}
BINDINGS = {"validatingadmissionpolicies": "validatingadmissionpolicybindings",
            "mutatingadmissionpolicies": "mutatingadmissionpolicybindings"}


def expected() -> list[tuple[str, str]]:
    """(resource, name) of every policy and binding."""
    return [(res, name) for kind, names in POLICIES.items() for res in (kind, BINDINGS[kind]) for name in names]


@dataclass(frozen=True)
class PolicyState:
    missing: tuple[str, ...] = ()
    error: str = ""

    @property
    def complete(self) -> bool:
        return not self.missing and not self.error

    def condition(self) -> tuple[bool, str, str]:
        """(status, reason, message) of an Agent's AdmissionPolicies condition."""
        if self.error:
            return False, "PoliciesUnreadable", (
                f"cannot read the admission policies ({self.error}); the operator's ClusterRole needs get on "
                f"{', '.join(sorted({r for r, _ in expected()}))}.admissionregistration.k8s.io; approvals are "
                f"recorded as unverified")
        if self.missing:
            return False, "PoliciesMissing", (
                f"missing: {', '.join(self.missing)}; approvals work but are recorded as unverified (anyone who may "
                f"patch a Goal may approve, under a name of their choosing) and agents are not confined to their own "
                f"goals: apply charts/overseer/files/admission")
        return True, "PoliciesInstalled", "approvals need verb approve on goals.overseer.dev; agents are confined"


async def check(kube: Kube) -> PolicyState:
    """Read each policy and binding by name."""
    missing = []
    for resource, name in expected():
        try:
            found = await kube.get(f"/apis/{GROUP_VERSION}/{resource}/{name}")
        except ApiError as e:
            return PolicyState(error=f"{e.status} {e.reason} on {resource}/{name}")
        if found is None:
            missing.append(f"{resource}/{name}")
    return PolicyState(tuple(missing))
