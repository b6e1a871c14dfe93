"""The evaluator: turns a Suite's Tasks into scored, recorded result rows.

It never knows which learner it runs, and learners never know which benchmark
a Task came from. A task that fails (an exception, NaN logits) is recorded as
failed with its error and the run goes on.
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
from fewshot_bench.learners.base import Learner
from fewshot_bench.tasks import Fingerprint, Suite, Task

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TaskOutcome:
    correct: int
    total: int
    fingerprint: str


def run_task(learner: Learner, task: Task) -> TaskOutcome:
    """Fit on the support set, predict the query stream, count correct answers."""
    fp = Fingerprint()
    fp.update("support", task.support)
    predictor = learner.fit(task.support, task.num_classes, task.validation)
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
    return TaskOutcome(correct, total, fp.hexdigest())


def _error_text(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}"
    return text if len(text) < 500 else text[:497] + "..."


def evaluate(suite: Suite, make_learner: Callable[[], Learner], run: RunInfo, results: ResultsDB, *,
             image_size: int, progress: bool = True, partial: bool = False,
             versions: Optional[dict] = None) -> Summary:
    """Evaluate one learner on every task of ``suite``; returns the summary.

    Finished tasks already in ``results`` for the same run are skipped.
    """
    from tqdm.auto import tqdm

    done = results.finished(run)
    todo = [(s, i) for s in suite.sources for i in range(s.num_tasks) if (s.name, s.task_id(i)) not in done]
    bar = tqdm(total=suite.num_tasks, initial=suite.num_tasks - len(todo), unit="task",
               desc=f"{suite.name} / {run.learner}", disable=not progress, dynamic_ncols=True)
    learner = make_learner()
    for source, index in todo:
        bar.set_postfix_str(source.name, refresh=False)
        start = time.perf_counter()
        task_id = source.task_id(index)
        try:
            task = suite.task(source, index, run.seed, image_size)
            outcome = run_task(learner, task)
            row = Row(source.name, source.group, source.benchmark, source.scoring, task_id,
                      outcome.correct, outcome.total)
            fingerprint = outcome.fingerprint
        except Exception as error:  # noqa: BLE001 -- one task's failure never ends the run
            log.warning("task %s/%s failed: %s", source.name, task_id, _error_text(error))
            log.debug("%s", traceback.format_exc())
            row = Row(source.name, source.group, source.benchmark, source.scoring, task_id, 0, 0,
                      status="failed", error=_error_text(error))
            fingerprint = ""
        results.record(run, row, fingerprint=fingerprint, seconds=time.perf_counter() - start,
                       versions=versions)
        bar.update(1)
    bar.close()
    expected = {s.name: s.num_tasks for s in suite.sources}
    return summarize(results.rows(run), expected, partial=partial)
