"""Writing a benchmark's results into its block of docs/performance.md."""

from __future__ import annotations

from pathlib import Path


def write_section(path: Path, title: str, begin: str, end: str, text: str) -> None:
    """Replace the block between begin and end, or add it under a new `## title` at the end. Read
    afresh just before writing: other benchmarks write other blocks of the same file."""
    block = f"{begin}\n{text}{end}"
    doc = path.read_text() if path.exists() else "# Performance\n"
    if begin in doc and end in doc:
        head, rest = doc.split(begin, 1)
        doc = head + block + rest.split(end, 1)[1]
    else:
        doc = doc.rstrip() + f"\n\n## {title}\n\n{block}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc)
