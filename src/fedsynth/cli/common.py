"""Shared CLI helpers: error reporting with exit codes, consoles, quiet libraries and thread limits."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)


def quiet(load_torch: bool = True) -> None:
    """Library chatter (Flower's strategy warnings, Opacus hook notices) hides the results.

    One thread each for torch and BLAS: many small fits, where threads only add contention.
    ``load_torch=False`` (train-generators, sample, audit: a marginal-model set needs no torch) leaves
    torch unloaded; :mod:`fedsynth.generators.torchnn` applies ``FEDSYNTH_THREADS`` when a torch
    family is first imported."""
    import logging
    import sys
    import warnings

    warnings.filterwarnings("ignore")
    for name in ("flwr", "opacus", "fedsynth.generators"):
        logging.getLogger(name).setLevel(logging.ERROR)
    from threadpoolctl import threadpool_limits

    threads = int(os.environ.setdefault("FEDSYNTH_THREADS", "1"))
    threadpool_limits(threads)
    if load_torch or "torch" in sys.modules:
        import torch

        torch.set_num_threads(threads)


console = Console(stderr=True)
out = Console()

#: Exceptions that mean "the user gave bad input": printed as one line, exit code 2.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    FileNotFoundError,
    FileExistsError,
    PermissionError,
)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn validation errors into a clear message and a non-zero exit code (no traceback)."""
    try:
        yield
    except typer.Exit:
        raise
    except USER_ERRORS as e:
        console.print(f"[bold red]error:[/] {type(e).__name__}: {e}")
        raise typer.Exit(code=2) from None


def refuse_existing(path: Path, overwrite: bool = False) -> None:
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; refusing to overwrite it (choose another path)")


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write to a temp file in the same folder, fsync, rename: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, indent=2, default=float) + "\n")


def warn(msg: str) -> None:
    console.print(f"[yellow]warning:[/] {msg}", highlight=False)


def progress() -> Progress:
    """The progress bar every long command shows (on stderr; gone when done)."""
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


class StageProgress:
    """A ``(stage, done, total)`` callback for the experiments: one bar per stage, labelled
    ``"{prefix}: {stage}"``; :meth:`close` removes its bars (e.g. when a seed is done)."""

    def __init__(self, prog: Progress, prefix: str) -> None:
        self.prog, self.prefix = prog, prefix
        self.tasks: dict[str, Any] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.prog.add_task(f"{self.prefix}: {stage}", total=total)
        self.prog.update(self.tasks[stage], completed=done)

    def close(self) -> None:
        for tid in self.tasks.values():
            self.prog.remove_task(tid)
        self.tasks.clear()
