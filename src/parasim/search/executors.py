"""Evaluate many candidates in parallel: in-process, a local process pool, or Ray.

Every executor has one job: `run(task, items) -> Outcome`, where `task(context, item)` is a
module-level function (picklable by reference) and `context` is whatever it needs that is the
same for every item (model, cluster, workload). The context is shipped once per worker (pool
initializer / `ray.put`), never once per item. Items are sent in chunks so that a 2 ms
simulation is not dwarfed by inter-process overhead.

Results come back in the order of `items`, whatever order the workers finish in, so the ranking
built from them is identical for every executor and worker count. Ctrl-C stops the search and
returns what has finished (`Outcome.interrupted`); the caller ranks that.

Ctrl-C from a terminal reaches the whole process group, workers included. Workers ignore it (the
parent keeps what finished), and they are forked with SIGINT blocked until they have said so, so
that a Ctrl-C while the pool is still starting cannot raise in a half-started worker (a traceback
on stderr); in the parent it waits, blocked, until every worker is started, then interrupts.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from parasim.errors import InputError
from parasim.mathx import cdiv

EXECUTORS = ("local", "ray")

Task = Callable[[Any, Any], Any]
Progress = Callable[[int], None]  # called with the number of items just finished


@dataclass
class Outcome:
    results: list[Any]  # aligned with items; None where the search was interrupted before it
    interrupted: bool = False


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _chunks(n: int, workers: int, per_worker: int = 6, max_size: int = 64) -> list[range]:
    """Index ranges: a few chunks per worker (load balance + progress), not too big."""
    if n == 0:
        return []
    size = max(1, min(max_size, cdiv(n, workers * per_worker)))
    return [range(i, min(n, i + size)) for i in range(0, n, size)]


# --- worker side --------------------------------------------------------------------------------
_WORKER: tuple[Task, Any] | None = None


def _init_worker(task: Task, context: Any) -> None:
    global _WORKER
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle (it keeps what finished)
    if hasattr(signal, "pthread_sigmask"):  # forked with SIGINT blocked (see _sigint_blocked)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    _WORKER = (task, context)


def _run_chunk(items: Sequence[Any]) -> list[Any]:
    assert _WORKER is not None, "worker was not initialised"
    task, context = _WORKER
    return [task(context, it) for it in items]


def _run_chunk_with(task: Task, context: Any, items: Sequence[Any]) -> list[Any]:
    return [task(context, it) for it in items]


# --- executors ------------------------------------------------------------------------------------
def run_serial(task: Task, context: Any, items: Sequence[Any], progress: Progress | None = None) -> Outcome:
    results: list[Any] = [None] * len(items)
    try:
        for i, it in enumerate(items):
            results[i] = task(context, it)
            if progress:
                progress(1)
    except KeyboardInterrupt:
        return Outcome(results, interrupted=True)
    return Outcome(results)


@contextmanager
def _sigint_blocked() -> Iterator[None]:
    """SIGINT held back in this thread while the pool forks its workers and starts its threads:
    they inherit the blocked mask (a worker unblocks it once it ignores SIGINT; the pool's
    threads keep it blocked, so a Ctrl-C is always the main thread's). A Ctrl-C meanwhile is
    delivered when the block ends, as a KeyboardInterrupt in the caller."""
    if not hasattr(signal, "pthread_sigmask"):  # pragma: no cover - not POSIX
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _stop(pool: ProcessPoolExecutor) -> None:
    """After Ctrl-C: drop the queued chunks and end the running ones now, so that the process
    exits as soon as the partial result is printed (instead of waiting for them)."""
    global _STOPPED
    procs = list((getattr(pool, "_processes", None) or {}).values())  # shutdown() forgets them
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
            _STOPPED = True


#: set once a pool's workers were terminated mid-chunk (`_stop`): a worker killed while writing its
#: result leaves a partial message in the pool's result pipe, and concurrent.futures' exit handler
#: then joins a manager thread blocked reading it, so the process would hang after printing its
#: answer (seen as a rare CI timeout). `stopped_a_pool` tells the CLI to leave without that join.
_STOPPED = False


def stopped_a_pool() -> bool:
    """Whether this process terminated pool workers after a Ctrl-C (see `_STOPPED`)."""
    return _STOPPED


_POOLS: dict[tuple, ProcessPoolExecutor] | None = None  # a `session`'s pools, by (task, context id, workers)


@contextmanager
def session() -> Iterator[None]:
    """Keep each local process pool for every `run` inside the block with the same task, context
    and worker count (a search's stages), instead of starting one per call: a pool costs tens of
    milliseconds to fork and stop, a search's stages are a few to a dozen calls."""
    global _POOLS
    if _POOLS is not None:  # nested: the outer session keeps them
        yield
        return
    _POOLS = {}
    try:
        yield
    finally:
        pools, _POOLS = _POOLS, None
        for pool in pools.values():
            pool.shutdown(wait=True)


def _pool(task: Task, context: Any, workers: int) -> ProcessPoolExecutor:
    """A new pool, or the session's for this task, context and worker count."""
    key = (task, id(context), workers)
    if _POOLS is not None and key in _POOLS:
        return _POOLS[key]
    pool = ProcessPoolExecutor(max_workers=workers, initializer=_init_worker, initargs=(task, context))
    if _POOLS is not None:
        _POOLS[key] = pool
    return pool


def run_local(task: Task, context: Any, items: Sequence[Any], *, workers: int,
              progress: Progress | None = None) -> Outcome:
    """A process pool (fork on Linux: the parent's imports and caches come for free); inside a
    `session`, the same pool for every call with this task and context."""
    if workers <= 1 or len(items) <= 1:
        return run_serial(task, context, items, progress)
    results: list[Any] = [None] * len(items)
    pool = None
    try:
        with _sigint_blocked():
            pool = _pool(task, context, workers)
            futures = {pool.submit(_run_chunk, [items[i] for i in r]): r for r in _chunks(len(items), workers)}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                r = futures[f]
                for i, res in zip(r, f.result()):
                    results[i] = res
                if progress:
                    progress(len(r))
        if _POOLS is None:
            pool.shutdown(wait=True)
    except KeyboardInterrupt:
        if pool is not None:
            if _POOLS is not None:  # a stopped pool is not reused
                _POOLS.pop((task, id(context), workers), None)
            _stop(pool)
        return Outcome(results, interrupted=True)
    return Outcome(results)


def run_ray(task: Task, context: Any, items: Sequence[Any], *, address: str | None = None,
            workers: int | None = None, progress: Progress | None = None) -> Outcome:
    """Ray tasks over chunks; connects to `address` or starts (and keeps) a local instance."""
    try:
        import ray
    except ImportError:
        raise InputError("executor", "ray is not installed; `pip install 'parasim[ray]'` or use --executor local") from None
    if not ray.is_initialized():
        try:
            if address:
                ray.init(address=address, include_dashboard=False, log_to_driver=False)
            else:
                ray.init(num_cpus=workers or default_workers(), include_dashboard=False, log_to_driver=False)
        except Exception as e:  # noqa: BLE001 - whatever Ray raises while starting, the user gets one line
            where = f"cannot connect to Ray at {address!r}" if address else "Ray did not start"
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            raise InputError("ray-address" if address else "executor",
                             f"{where} ({type(e).__name__}: {reason}); check the address or use --executor local") from None
    results: list[Any] = [None] * len(items)
    if not items:
        return Outcome(results)
    remote = ray.remote(_run_chunk_with)
    task_ref, ctx_ref = ray.put(task), ray.put(context)
    slots = workers or int(ray.available_resources().get("CPU", 1)) or 1
    refs = {}
    try:
        for r in _chunks(len(items), slots):
            refs[remote.remote(task_ref, ctx_ref, [items[i] for i in r])] = r
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                r = refs[ref]
                for i, res in zip(r, ray.get(ref)):
                    results[i] = res
                if progress:
                    progress(len(r))
    except KeyboardInterrupt:
        for ref in refs:
            ray.cancel(ref, force=True)
        return Outcome(results, interrupted=True)
    return Outcome(results)


def run(task: Task, context: Any, items: Sequence[Any], *, executor: str = "local", workers: int | None = None,
        ray_address: str | None = None, progress: Progress | None = None) -> Outcome:
    if executor not in EXECUTORS:
        raise InputError("executor", f"'{executor}' is not one of {', '.join(EXECUTORS)}")
    if workers is not None and workers < 1:
        raise InputError("workers", f"must be >= 1, got {workers}")
    if ray_address is not None and executor != "ray":
        raise InputError("ray-address", "applies to --executor ray only (the local executor has no address)")
    if executor == "ray":
        return run_ray(task, context, items, address=ray_address, workers=workers, progress=progress)
    return run_local(task, context, items, workers=workers or default_workers(), progress=progress)
