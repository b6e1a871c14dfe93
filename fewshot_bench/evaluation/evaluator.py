"""The evaluator: turns a Suite's Tasks into scored, recorded result rows.

It never knows which learner it runs, and learners never know which benchmark
a Task came from. A task that fails (an exception, NaN logits, a timeout, a
worker killed for memory) is recorded as failed with its error and the run
goes on. Every finished task is committed to the results database at once.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import traceback
from typing import Callable, Optional

import numpy as np

from fewshot_bench.errors import LearnerError
from fewshot_bench.evaluation.results import ResultsDB, RunInfo
from fewshot_bench.evaluation.scores import Row, Summary, summarize
from fewshot_bench.learners.base import Learner, fit_learner
from fewshot_bench.tasks import Fingerprint, Suite, Task, TaskSource

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TaskOutcome:
    correct: int
    total: int
    fingerprint: str
    fit_seconds: float


def run_task(learner: Learner, task: Task) -> TaskOutcome:
    """Fit on the support set, predict the query stream, count correct answers.

    The learner gets ``task.info`` if its ``fit`` takes it (:func:`~fewshot_bench.learners.base.fit_learner`).
    """
    fp = Fingerprint()
    fp.update("support", task.support)
    fit_start = time.perf_counter()
    predictor = fit_learner(learner, task)
    fit_seconds = time.perf_counter() - fit_start
    correct = total = 0
    for batch in task.query:
        fp.update("query", batch)
        logits = np.asarray(predictor.predict(batch.unlabelled()))
        if logits.shape != (len(batch), task.num_classes):
            raise LearnerError(f"predict returned logits of shape {logits.shape}, "
                               f"expected {(len(batch), task.num_classes)}")
        if not np.isfinite(logits).all():
            raise LearnerError("predict returned NaN or infinite logits")
        correct += int((logits.argmax(axis=1) == batch.labels).sum())
        total += len(batch)
    if total == 0:
        raise LearnerError(f"task {task.key} has an empty query set")
    return TaskOutcome(correct, total, fp.hexdigest(), fit_seconds)


def error_text(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}"
    return text if len(text) < 500 else text[:497] + "..."


def failed_row(source: TaskSource, index: int, error: str) -> Row:
    return Row(source.name, source.group, source.benchmark, source.scoring, source.task_id(index), 0, 0,
               status="failed", error=error)


def attempt_task(suite: Suite, source: TaskSource, index: int, learner: Learner, run: RunInfo,
                 image_size: int) -> tuple[Row, str, float]:
    """Build and run task ``index`` of ``source``: (row, fingerprint, seconds); failures become failed rows."""
    start = time.perf_counter()
    try:
        outcome = run_task(learner, suite.task(source, index, run.seed, image_size))
        row = Row(source.name, source.group, source.benchmark, source.scoring, source.task_id(index),
                  outcome.correct, outcome.total, fit_seconds=outcome.fit_seconds)
        return row, outcome.fingerprint, time.perf_counter() - start
    except Exception as error:  # noqa: BLE001 -- one task's failure never ends the run
        log.warning("task %s/%s failed: %s", source.name, source.task_id(index), error_text(error))
        log.debug("%s", traceback.format_exc())
        return failed_row(source, index, error_text(error)), "", time.perf_counter() - start


def execute_task(suite: Suite, source: TaskSource, index: int, learner: Learner, run: RunInfo,
                 results: ResultsDB, image_size: int, versions: Optional[dict] = None) -> Row:
    """Run task ``index`` of ``source`` and commit its row at once."""
    row, fingerprint, seconds = attempt_task(suite, source, index, learner, run, image_size)
    results.record(run, row, fingerprint=fingerprint, seconds=seconds, versions=versions)
    return row


def pending(suite: Suite, run: RunInfo, results: ResultsDB) -> list[tuple[TaskSource, int]]:
    """The (source, index) pairs of the suite not yet finished for this run, in suite order."""
    done = results.finished(run)
    return [(s, i) for s in suite.sources for i in range(s.num_tasks) if (s.name, s.task_id(i)) not in done]


def progress_bar(suite: Suite, run: RunInfo, todo: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=suite.num_tasks, initial=suite.num_tasks - todo, unit="task",
                desc=f"{suite.name} / {run.learner}", disable=not enabled, dynamic_ncols=True)


def evaluate(suite: Suite, make_learner: Callable[[], Learner], run: RunInfo, results: ResultsDB, *,
             image_size: int, progress: bool = True, partial: bool = False,
             versions: Optional[dict] = None, allow_version_change: bool = False) -> Summary:
    """Evaluate one learner on every task of ``suite`` in this process; returns the summary.

    Finished tasks already in ``results`` for the same run are skipped.
    """
    results.start_run(run, suite, versions, allow_version_change)
    todo = pending(suite, run, results)
    bar = progress_bar(suite, run, len(todo), progress)
    learner = make_learner() if todo else None
    for source, index in todo:
        bar.set_postfix_str(source.name, refresh=False)
        execute_task(suite, source, index, learner, run, results, image_size, versions)
        bar.update(1)
    bar.close()
    return summarize_run(suite, run, results, partial)


def summarize_run(suite: Suite, run: RunInfo, results: ResultsDB, partial: bool = False) -> Summary:
    return summarize(results.rows(run), {s.name: s.num_tasks for s in suite.sources}, partial=partial)
