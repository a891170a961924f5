"""Run an importer in a child process with a time limit.

libhdf5 (under h5py) can loop forever on a crafted or corrupt file (the fuzzer in
tests/test_fuzz.py found such files), and such a loop cannot be interrupted from Python. So Keras
files are read in a child process: it sends back the graph as ``.elstm`` bytes, which the parent
reads with its own checked reader (no pickle crosses the boundary), or the error it raised; a
child that runs past the limit is killed and the file refused.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import traceback
from pathlib import Path
from typing import Callable

from .. import artifact, errors
from ..ir import Graph

# generous: a healthy 100 MB model reads in seconds; EDGELSTM_READ_TIMEOUT sets the base
SECONDS_BASE, SECONDS_PER_MB = float(os.environ.get("EDGELSTM_READ_TIMEOUT", "60")), 2.0


def _child(importer: Callable[[Path], Graph], path: Path, conn) -> None:
    try:
        conn.send_bytes(b"G" + artifact.to_bytes(importer(path)))
    except BaseException as exc:  # noqa: BLE001  (everything goes back to the parent as text)
        kind = type(exc).__name__ if isinstance(exc, errors.EdgeLSTMError) else "internal"
        detail = str(exc) if kind != "internal" else "".join(traceback.format_exception(exc)).strip()
        conn.send_bytes(b"E" + json.dumps({"kind": kind, "message": detail}).encode())
    finally:
        conn.close()


def run_isolated(importer: Callable[[Path], Graph], path: Path, seconds: float | None = None) -> Graph:
    """`importer(path)` in a child process; its EdgeLSTMError is raised here, a hang is refused."""
    limit = seconds if seconds is not None else SECONDS_BASE + SECONDS_PER_MB * path.stat().st_size / 2**20
    method = "fork" if sys.platform.startswith("linux") else "spawn"
    context = multiprocessing.get_context(method)
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(importer, path, send), daemon=True)
    child.start()
    send.close()
    try:
        if not receive.poll(limit):
            raise errors.FormatError(f"{path}: reading it did not finish in {limit:.0f} s (HDF5 looping on a corrupt "
                                     "or hostile file); refused")
        try:
            message = receive.recv_bytes()
        except EOFError:
            raise errors.FormatError(f"{path}: the reader crashed on it (exit code {child.exitcode}); a corrupt or "
                                     "hostile file") from None
    finally:
        if child.is_alive():
            child.kill()
        child.join()
        receive.close()
    if message[:1] == b"G":
        return artifact.read(message[1:])
    report = json.loads(message[1:])
    error = getattr(errors, report["kind"], None)
    if error is None:
        raise RuntimeError(f"reading {path} failed in the reader process:\n{report['message']}")
    raise error(report["message"])

