"""Map a function over shards: in this process, on all local cores, or on a Dask cluster through prefect-dask.

Results come back in input order whatever finished first, so a stage's output does not depend on how it ran.
`fn` must be a module-level function (it is pickled to worker processes) taking one argument.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any

from model.files import cpu_count


def resolve_workers(workers: int) -> int:
    """0 means every core this process may use."""
    if workers < 0:
        raise ValueError(f"workers must be >= 0 (0: all cores), got {workers}")
    return workers or cpu_count()


def map_shards(fn: Callable[[Any], Any], items: Sequence[Any], workers: int = 0, dask_address: str | None = None,
               name: str = "shard", on_result: Callable[[int, Any], None] | None = None) -> list[Any]:
    """[fn(item) for item in items], run in parallel.

    dask_address ("tcp://host:8786"): every item becomes a Prefect task run on that Dask cluster (prefect-dask's
    DaskTaskRunner), so each shard shows in the Prefect UI. Otherwise `workers` processes on this machine
    (0: all cores; 1, or a single item: in this process). `on_result(i, result)` is called for each result (as they
    arrive on local processes, in input order on Dask). A failing item stops the map at once (queued items are
    cancelled) with an error naming it.
    """
    items = list(items)
    results: list[Any] = [None] * len(items)

    def done(i: int, result: Any) -> None:
        results[i] = result
        if on_result is not None:
            on_result(i, result)

    if dask_address:
        from prefect import task
        from prefect_dask import DaskTaskRunner

        shard_task = task(fn, name=name, persist_result=False)
        with DaskTaskRunner(address=dask_address) as runner:
            futures = [runner.submit(shard_task, {fn.__code__.co_varnames[0]: item}) for item in items]
            for i, future in enumerate(futures):
                done(i, future.result())
        return results

    n = min(resolve_workers(workers), len(items))
    if n <= 1:
        for i, item in enumerate(items):
            done(i, fn(item))
        return results
    # spawn, not fork: the caller runs Prefect's and MLflow's threads, and forking a threaded process can deadlock.
    with ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn")) as pool:
        pending = {pool.submit(fn, item): i for i, item in enumerate(items)}
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                i = pending.pop(future)
                try:
                    done(i, future.result())
                except Exception as err:
                    pool.shutdown(cancel_futures=True)
                    raise RuntimeError(f"{name} {i} failed ({_describe(items[i])}): {type(err).__name__}: {err}") \
                        from err
    return results


def _describe(item: Any) -> str:
    if isinstance(item, dict):
        return str(item.get("path") or item.get("source") or item.get("index"))
    return repr(item)[:200]
