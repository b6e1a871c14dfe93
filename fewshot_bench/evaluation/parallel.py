"""Tasks in worker processes: parallelism, per-task timeouts and crash isolation.

Each worker rebuilds the job's suite, backbone and learner from the picklable
:class:`EvalJob`, then runs the tasks the parent hands it, one at a time,
recording each row itself. The parent kills a worker whose task outlives the
timeout, and records that task (or the task of a worker that died, e.g. for
memory) as failed; a fresh worker takes over the rest. Tasks are pure
functions of (source, index, seed), so the rows do not depend on which worker
ran them or in which order.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import time
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Optional

from fewshot_bench.errors import ConfigError
from fewshot_bench.evaluation.job import EvalJob, setup
from fewshot_bench.evaluation.results import ResultsDB, RunInfo
from fewshot_bench.tasks import Suite, TaskSource


def _worker(job: EvalJob, results_path: str, versions: dict, conn: Connection) -> None:
    """Worker process: set the job up, then run (source name, index) pairs until told to stop."""
    from fewshot_bench.evaluation.evaluator import execute_task
    from fewshot_bench.evaluation.job import quiet_tensorflow

    quiet_tensorflow()

    ctx = setup(job)
    results = ResultsDB(results_path)
    learner = ctx.make_learner()
    conn.send(("ready", ctx.run.key))
    while True:
        message = conn.recv()
        if message is None:
            break
        source_name, index = message
        row = execute_task(ctx.suite, ctx.suite.source(source_name), index, learner, ctx.run, results,
                           ctx.image_size, versions)
        conn.send(("done", row.status))
    results.close()


@dataclasses.dataclass
class _Worker:
    process: mp.Process
    conn: Connection
    task: Optional[tuple[TaskSource, int]] = None
    started: float = 0.0
    ready: bool = False


def run_in_workers(job: EvalJob, suite: Suite, run: RunInfo, results: ResultsDB,
                   todo: list[tuple[TaskSource, int]], *, workers: int, task_timeout: Optional[float],
                   versions: dict, bar) -> None:
    """Run ``todo`` on ``workers`` processes; returns when every task has a row."""
    from fewshot_bench.evaluation.evaluator import failed_row

    context = mp.get_context("spawn")
    queue = list(todo)
    pool: list[_Worker] = []

    def start() -> _Worker:
        parent, child = context.Pipe()
        process = context.Process(target=_worker, args=(job, str(results.path), versions, child), daemon=True)
        process.start()
        child.close()
        return _Worker(process, parent)

    def fail(worker: _Worker, why: str) -> None:
        source, index = worker.task
        results.record(run, failed_row(source, index, why), fingerprint="",
                       seconds=time.perf_counter() - worker.started, versions=versions)
        bar.update(1)

    pool = [start() for _ in range(min(workers, len(queue)))]
    while pool:
        for worker in list(pool):
            if worker.ready and worker.task is None:
                if queue:
                    worker.task, worker.started = queue.pop(0), time.perf_counter()
                    worker.conn.send((worker.task[0].name, worker.task[1]))
                    bar.set_postfix_str(worker.task[0].name, refresh=False)
                else:
                    worker.conn.send(None)
                    worker.process.join(timeout=30)
                    pool.remove(worker)
        ready = wait([w.conn for w in pool] + [w.process.sentinel for w in pool], timeout=0.5)
        for worker in list(pool):
            if worker.conn in ready:
                try:
                    message = worker.conn.recv()
                except EOFError:
                    message = None
                if message is not None:
                    if message[0] == "ready":
                        worker.ready = True
                    else:
                        worker.task = None
                        bar.update(1)
                    continue
            timed_out = (worker.task is not None and task_timeout is not None
                         and time.perf_counter() - worker.started > task_timeout)
            died = not worker.process.is_alive()
            if timed_out or died:
                if timed_out:
                    worker.process.kill()
                worker.process.join()
                code = worker.process.exitcode
                if worker.task is not None:
                    fail(worker, f"TimeoutError: task exceeded --task_timeout {task_timeout:g} s" if timed_out
                         else f"WorkerDied: the worker process ended with exit code {code}"
                              f"{' (killed: out of memory?)' if code == -9 else ''}")
                elif not worker.ready:
                    raise ConfigError(f"an evaluation worker failed to start (exit code {code}); "
                                      f"run with --workers 0 to see the error")
                pool.remove(worker)
                if queue:
                    pool.append(start())
