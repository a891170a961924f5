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

SECONDS_BASE, SECONDS_PER_MB = 60.0, 2.0  # generous: a healthy 100 MB model reads in seconds


def time_limit(path: Path) -> float:
    """Seconds a read of `path` may take: 60 (or EDGELSTM_READ_TIMEOUT) plus 2 per MB."""
    text = os.environ.get("EDGELSTM_READ_TIMEOUT")
    try:
        base = SECONDS_BASE if text is None else float(text)
    except ValueError:
        raise errors.InputError(f"EDGELSTM_READ_TIMEOUT={text!r} is not a number of seconds") from None
    return base + SECONDS_PER_MB * path.stat().st_size / 2**20


def _child(importer: Callable[[Path], Graph], path: Path, conn) -> None:
    try:
        conn.send_bytes(b"G" + artifact.to_bytes(importer(path)))
    except BaseException as exc:  # noqa: BLE001  (everything goes back to the parent as text)
        if isinstance(exc, errors.EdgeLSTMError):
            kind = next(c.__name__ for c in type(exc).__mro__ if getattr(errors, c.__name__, None) is c)
        else:
            kind = "MemoryError" if isinstance(exc, MemoryError) else "internal"
        conn.send_bytes(b"E" + json.dumps({"kind": kind, "message": str(exc), "type": type(exc).__name__,
                                           "traceback": "".join(traceback.format_exception(exc))}).encode())
    finally:
        conn.close()


def run_isolated(importer: Callable[[Path], Graph], path: Path, seconds: float | None = None) -> Graph:
    """`importer(path)` in a child process; its EdgeLSTMError is raised here, a hang is refused.
    Inside a daemon process (a multiprocessing.Pool worker), which may not start children, the
    importer runs in-process."""
    if multiprocessing.current_process().daemon:
        return importer(path)
    limit = seconds if seconds is not None else time_limit(path)
    method = "fork" if sys.platform.startswith("linux") else "spawn"
    context = multiprocessing.get_context(method)
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(importer, path, send), daemon=True)
    child.start()
    send.close()
    message = None
    try:
        if receive.poll(limit):
            try:
                message = receive.recv_bytes()
            except EOFError:
                message = b""
    finally:
        if child.is_alive():
            child.kill()
        child.join()
        receive.close()
    if message is None:
        raise errors.FormatError(f"{path}: reading it did not finish in {limit:.0f} s, so it was stopped (HDF5 can "
                                 "loop on a corrupt file); a larger EDGELSTM_READ_TIMEOUT allows more")
    if not message:
        raise errors.FormatError(f"{path}: the reader process died on it (exit code {child.exitcode}); the file is "
                                 "probably corrupt")
    if message[:1] == b"G":
        return artifact.read(message[1:])
    report = json.loads(message[1:])
    if report["kind"] == "MemoryError":
        raise MemoryError(report["message"])
    error = getattr(errors, report["kind"], None)
    if error is None:
        failure = RuntimeError(f"reading {path} failed in the reader process: {report['type']}: {report['message']}")
        failure.add_note(report["traceback"])
        raise failure
    raise error(report["message"])
