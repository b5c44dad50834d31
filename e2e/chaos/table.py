"""The fault table: one row per scenario, what was done to which part and what came of the goals.

Every scenario module returns `Row`s; `python -m e2e.chaos` prints them and can write them into
docs/reliability.md. A row whose `lost` or `duplicate_pods` (or `kb_rows_lost`) is not 0 is a broken
promise: `Row.ok` is False and the run exits non-zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Row:
    scenario: str              # short name, e.g. "operator SIGKILL x50"
    done: str                  # what was done, in words a reader of docs/reliability.md follows
    goals_in: int = 0          # goals applied
    finished: int = 0          # ended Succeeded
    failed: int = 0            # ended Failed with a reason (see `reasons`)
    lost: int = 0              # never ended, or ended without a reason, or vanished
    duplicate_pods: int = 0    # goals that ever had two live pods at once (or two pods for one attempt)
    kb_rows_lost: int = 0      # experiences, checkpoints, approval records or spend rows written and then missing
    reasons: dict[str, int] = field(default_factory=dict)  # failure reason -> count
    seconds: float = 0.0       # wall time of the scenario
    notes: str = ""            # anything a reader must know (counts of lists, retries seen, ...)

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.duplicate_pods == 0 and self.kb_rows_lost == 0


HEADER = ("| scenario | what was done | goals in | finished | failed (reasons) | lost | duplicate pods "
          "| knowledge rows lost | time | notes |")


def markdown(rows: list[Row]) -> str:
    lines = [HEADER, "|" + "---|" * HEADER.count(" | ") + "---|"]
    for r in rows:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(r.reasons.items()))
        failed = f"{r.failed} ({reasons})" if reasons else str(r.failed)
        lines.append(f"| {r.scenario} | {r.done} | {r.goals_in} | {r.finished} | {failed} | {r.lost} "
                     f"| {r.duplicate_pods} | {r.kb_rows_lost} | {r.seconds:.0f} s | {r.notes} |")
    return "\n".join(lines)
