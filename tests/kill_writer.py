"""Child process of the kill-during-write experiment: rewrite one file forever, until SIGKILL.

    python tests/kill_writer.py atomic|naive TARGET BLOB_A BLOB_B

``atomic`` runs ``write_atomic`` (and ``fsync_directory``) compiled from the source of
``usp/io/snapshot.py`` itself, without importing the package: importing ``usp`` imports JAX,
which costs seconds per trial, and these two functions need only the standard library.
``naive`` overwrites the file in place (``open(path, "wb")``): the control that loses data.
The child prints one line once the first write is complete, then alternates BLOB_A and BLOB_B.

``run_kill_trials`` is the parent's side, shared by tests/test_snapshot.py,
benchmarks/bench_snapshot.py and the persistence chapter.
"""

from __future__ import annotations
import __future__

import ast
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

MODULE = Path(__file__).resolve().parents[1] / "usp" / "io" / "snapshot.py"
FUNCTIONS = {"write_atomic", "fsync_directory"}


def load_atomic_writer(module: Path = MODULE):
    """``write_atomic`` as defined in ``module``, with only os/tempfile/Path in scope."""
    tree = ast.parse(module.read_text(), filename=str(module))
    wanted = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in FUNCTIONS]
    if {n.name for n in wanted} != FUNCTIONS:
        raise SystemExit(f"{module} no longer defines {sorted(FUNCTIONS)}")
    flags = __future__.annotations.compiler_flag
    code = compile(ast.Module(wanted, type_ignores=[]), str(module), "exec", flags=flags)
    namespace = {"os": os, "tempfile": tempfile, "Path": Path}
    exec(code, namespace)  # noqa: S102 - our own module's source, parsed above
    return namespace["write_atomic"]


def write_naive(path: str, data: bytes) -> None:
    with open(path, "wb") as out:
        out.write(data)


def main() -> None:
    mode, target, *blobs = sys.argv[1:]
    write = load_atomic_writer() if mode == "atomic" else write_naive
    contents = [Path(blob).read_bytes() for blob in blobs]
    write(target, contents[0])
    print("ready", flush=True)
    while True:
        for data in contents:
            write(target, data)


def run_kill_trials(
    mode: str,
    directory: Path,
    blobs: list[bytes],
    read: Callable[[Path], bytes],
    errors: tuple[type[BaseException], ...],
    *,
    trials: int = 50,
    max_delay_s: float = 0.03,
    seed: int = 0,
) -> dict[str, int]:
    """SIGKILL a writer child at a random instant, ``trials`` times; after each kill ``read``
    the file (raising one of ``errors`` when it does not verify) and count the trials where
    it is not exactly one of ``blobs`` as lost."""
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, blob in enumerate(blobs):
        paths.append(directory / f"blob-{i}")
        paths[-1].write_bytes(blob)
    target = directory / "snapshot.usp"
    lost = 0
    for _ in range(trials):
        child = subprocess.Popen(
            [sys.executable, __file__, mode, str(target), *map(str, paths)],
            stdout=subprocess.PIPE,
        )
        assert child.stdout is not None
        if child.stdout.readline() != b"ready\n":
            raise RuntimeError(f"writer child failed (exit {child.wait()})")
        time.sleep(rng.uniform(0.0, max_delay_s))
        child.kill()
        child.wait()
        child.stdout.close()
        try:
            lost += read(target) not in blobs
        except errors:
            lost += 1
    leftovers = len(list(directory.glob(".snapshot.usp.*.tmp")))
    return {"trials": trials, "lost": lost, "temporaries_left": leftovers}


if __name__ == "__main__":
    main()
