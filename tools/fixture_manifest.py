"""The loop the fixture scripts share: (re)make fixtures and keep ``manifest.json`` in step.

Imported by the scripts in this folder (run as ``python tools/<script>.py``, which puts this
folder on ``sys.path``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence


def write_fixtures(out_dir: Path, fixtures: Sequence, only: set[str], make: Callable[[object], dict],
                   generated: tuple[str, ...], describe: Callable[[object, dict], str]) -> list[dict]:
    """Make every fixture (or only those named in `only`, keeping the others' manifest entries),
    write ``out_dir/manifest.json`` and return its entries. A full run first deletes the files
    ending in `generated`, so nothing stale survives a removed fixture."""
    unknown = only - {fx.name for fx in fixtures}
    if unknown:
        raise SystemExit(f"unknown fixture(s): {sorted(unknown)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = out_dir / "manifest.json"
    old_entries = {}
    if only and manifest_path.exists():
        old_entries = {e["name"]: e for e in json.loads(manifest_path.read_text())}
    elif not only:
        for stale in out_dir.iterdir():
            if stale.name.endswith(generated):
                stale.unlink()
    entries = []
    for fx in fixtures:
        if only and fx.name not in only:
            if fx.name in old_entries:
                entries.append(old_entries[fx.name])
            continue
        entries.append(make(fx))
        print(describe(fx, entries[-1]))
    manifest_path.write_text(json.dumps(entries, indent=2) + "\n")
    total = sum(p.stat().st_size for p in out_dir.iterdir() if p.is_file())
    print(f"{len(entries)} fixtures in manifest, {out_dir.name}/ = {total / 1024:.0f} KiB")
    return entries
