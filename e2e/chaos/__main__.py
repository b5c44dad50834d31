"""The fault table: run fault scenarios on the local control plane and print one row each.

    python -m e2e.chaos [SCENARIO ...] [--full] [--docs docs/reliability.md] [--keep-cluster] [--list]

Without names every scenario runs, reduced (a few minutes in all) unless --full (the sizes
docs/reliability.md shows). The exit status is non-zero when a row lost a goal, ran one twice, lost a
knowledge-base row, or a scenario could not complete.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from e2e import harness
from e2e.bench.docs import write_section
from e2e.chaos.context import Context
from e2e.chaos.table import Row, markdown

# Scenario modules, each exposing SCENARIOS: dict[name, (Context, full) -> Row]; a module not present
# in this checkout is skipped.
MODULES = ("e2e.chaos.control_plane", "e2e.chaos.data_plane")
SECTION_BEGIN = "<!-- chaos:begin (written by python -m e2e.chaos --docs) -->"
SECTION_END = "<!-- chaos:end -->"


def log(msg: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def scenarios() -> dict[str, Callable[[Context, bool], Row]]:
    found: dict[str, Callable[[Context, bool], Row]] = {}
    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
            continue
        found.update(module.SCENARIOS)
    return found


def run_one(cluster: harness.Cluster, name: str, scenario: Callable[[Context, bool], Row], full: bool,
            workdir: Path) -> tuple[Row, bool]:
    """The scenario's row, and whether it completed; a scenario that raised gets a row saying why."""
    folder = workdir / name
    folder.mkdir(parents=True, exist_ok=True)
    ctx = Context(cluster, folder)
    started = time.monotonic()
    try:
        return scenario(ctx, full), True
    except Exception as e:  # noqa: BLE001 - the table shows it, the exit status fails
        row = getattr(e, "row", None)
        if row is None:
            traceback.print_exc()
            row = Row(scenario=name, done="did not complete", seconds=time.monotonic() - started,
                      notes=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} (logs: {folder})")
        return row, False
    finally:
        ctx.close()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    known = scenarios()
    p = argparse.ArgumentParser(prog="python -m e2e.chaos", description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", metavar="SCENARIO", help=f"of: {', '.join(known)} (default: all)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--full", action="store_true", help="the sizes of docs/reliability.md")
    size.add_argument("--reduced", dest="full", action="store_false", help="a few minutes in all (default)")
    p.add_argument("--docs", type=Path, help="write the table, the command and the date into this file")
    p.add_argument("--keep-cluster", action="store_true", help="leave a cluster this run started running")
    p.add_argument("--list", action="store_true", help="print the scenarios' names and exit")
    args = p.parse_args(argv)
    if args.list:
        print("\n".join(known))
        return 0
    unknown = [n for n in args.names if n not in known]
    if unknown:
        p.error(f"no scenario named {', '.join(unknown)}; choose from {', '.join(known)}")
    chosen = args.names or list(known)
    command = " ".join(["python -m e2e.chaos", *argv])
    workdir = harness.cache_dir() / "chaos" / datetime.now().strftime("%Y%m%d-%H%M%S")
    log(f"starting the control plane ({harness.control_plane_dir()}); logs in {workdir}")
    cluster = harness.start_cluster()
    rows: list[Row] = []
    completed: list[bool] = []
    try:
        kubectl = harness.Kubectl(cluster)
        harness.install_crds(kubectl)
        harness.install_admission_policies(kubectl)  # sub-goals are created with agents' own tokens
        for name in chosen:
            log(f"{name} ({'full' if args.full else 'reduced'})")
            row, ok = run_one(cluster, name, known[name], args.full, workdir)
            rows.append(row)
            completed.append(ok)
            log(f"{name}: {'ok' if ok and row.ok else 'FAILED'} in {row.seconds:.0f} s: {row.notes}")
            if args.docs:  # row by row: a run cut short still leaves what it measured
                stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
                write_section(args.docs, "The fault table", SECTION_BEGIN, SECTION_END,
                              f"`{command}`, {stamp}:\n\n{markdown(rows)}\n")
    finally:
        if cluster.started_here and not args.keep_cluster:
            log("stopping the control plane this run started")
            harness.stop_cluster()
    print(markdown(rows))
    return 0 if all(completed) and all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
