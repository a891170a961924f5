"""The sections bench scripts write into bench/RESULTS.md, each between its own markers."""

from __future__ import annotations

from pathlib import Path


def write_section(path: Path, name: str, lines: list[str], heading: str) -> None:
    """Put `lines` between ``<!-- name:start -->`` and ``<!-- name:end -->`` in `path`, replacing what
    was there; a section not there yet goes at the end, under `heading` (markdown, may be empty)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = "\n".join([start, *lines, end])
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    if start in text:
        text = text[:text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + (heading + "\n\n" if heading else "") + block + "\n"
    path.write_text(text)
