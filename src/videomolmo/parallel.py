"""`parallel_map`: run a function over many items on all cores, with a rich progress bar.

Used for whole-benchmark evaluation (one item = one expression's ground truth and prediction).
Results come back in input order; the first exception raised by a worker is re-raised in the
caller (a `VideoMolmoError` keeps its one-line message) after the remaining work is cancelled.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, Callable, Iterable, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from videomolmo.errors import ConfigError

T = TypeVar("T")
R = TypeVar("R")

__all__ = ["default_workers", "parallel_map"]


def default_workers() -> int:
    """CPU cores this process may use (respects taskset / cgroup CPU affinity)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _default_start_method() -> str:
    methods = multiprocessing.get_all_start_methods()
    return "forkserver" if "forkserver" in methods else "spawn"


def _one_thread_per_worker() -> None:
    # N worker processes each running N BLAS / OpenCV / torch threads would oversubscribe the
    # cores N-fold; parallelism comes from the processes.
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:  # pragma: no cover - cv2 is a dependency
        pass
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not enabled,
        transient=False,
    )


def parallel_map(
    fn: Callable[[T], R],
    items: Iterable[T],
    workers: int | None = None,
    description: str = "working",
    progress: bool = True,
    start_method: str | None = None,
) -> list[R]:
    """`[fn(item) for item in items]` on `workers` processes (default: all cores), in input order.

    `fn` and the items must be picklable (a module-level function, or `functools.partial` of
    one). With `workers=1`, or a single item, everything runs in this process (no pickling),
    which is also the easiest way to debug `fn`. At most `4 * workers` items are in flight at
    once, so large items (mask stacks) are not all copied to the pool up front.

    Args:
        fn: function applied to each item.
        items: the work; consumed once.
        workers: process count; None = `default_workers()`.
        description: label of the progress bar (printed on stderr).
        progress: show the progress bar.
        start_method: multiprocessing start method ("fork", "forkserver", "spawn"); None =
            forkserver where available, else spawn (never a plain fork: see the comment inside).

    Raises:
        ConfigError: `workers` < 1. Whatever `fn` raised, for the first failing item.
    """
    work = list(items)
    n_workers = default_workers() if workers is None else int(workers)
    if n_workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers!r}")
    results: list[Any] = [None] * len(work)
    with _progress(progress) as bar:
        task = bar.add_task(description, total=len(work))
        if n_workers == 1 or len(work) <= 1:
            for i, item in enumerate(work):
                results[i] = fn(item)
                bar.advance(task)
            return results
        # Forking a parent whose OpenCV / OpenMP thread pools have already run can deadlock the
        # child on its first call into them (seen here: cv2.setNumThreads hanging in the pool
        # initializer), so workers start from a fresh interpreter unless asked otherwise.
        ctx = multiprocessing.get_context(start_method or _default_start_method())
        n_workers = min(n_workers, len(work))
        pool = ProcessPoolExecutor(max_workers=n_workers, mp_context=ctx, initializer=_one_thread_per_worker)
        pending: dict[Future, int] = {}
        next_item = 0
        try:
            while next_item < len(work) or pending:
                while next_item < len(work) and len(pending) < 4 * n_workers:
                    pending[pool.submit(fn, work[next_item])] = next_item
                    next_item += 1
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    results[pending.pop(fut)] = fut.result()  # re-raises the worker's exception
                    bar.advance(task)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
    return results
