import dataclasses

import numpy as np
import pytest

from fewshot_bench.evaluation.evaluator import evaluate, run_task
from fewshot_bench.evaluation.results import ResultsDB, RunInfo
from fewshot_bench.learners.base import Learner, Predictor, accepts_info
from fewshot_bench.tasks import EPISODES, POOLED, Examples, QueryStream, Suite, Task, TaskInfo, TaskSource


class _OraclePredictor(Predictor):
    """Predicts class = int(first pixel * 10), which is how the toy data is made."""

    def __init__(self, num_classes, wrong_every=0):
        self.num_classes, self.wrong_every = num_classes, wrong_every

    def predict(self, query):
        assert query.labels is None  # the evaluator hides query labels
        cls = np.rint(query.images[:, 0, 0, 0] * 10).astype(int)
        if self.wrong_every:
            cls[:: self.wrong_every] = (cls[:: self.wrong_every] + 1) % self.num_classes
        return np.eye(self.num_classes)[cls]


class ToyLearner(Learner):
    def __init__(self, fail_on=(), wrong_every=0):
        super().__init__(None, 0)
        self.fail_on, self.wrong_every, self.fits = fail_on, wrong_every, 0

    def fit(self, support, num_classes, validation=None):
        self.fits += 1
        if num_classes in self.fail_on:
            raise RuntimeError(f"cannot do {num_classes} classes")
        return _OraclePredictor(num_classes, self.wrong_every)


def _toy_examples(n, num_classes, prefix):
    labels = np.arange(n) % num_classes
    images = np.zeros((n, 2, 2, 3), np.float32) + (labels / 10)[:, None, None, None]
    return Examples(images, labels, tuple(f"{prefix}{i}" for i in range(n)))


def _source(name, num_classes, scoring, num_tasks, group):
    def build(index, seed, image_size):
        return Task(_toy_examples(num_classes * 2, num_classes, f"{name}/s{index}/"),
                    QueryStream.from_examples(_toy_examples(10, num_classes, f"{name}/q{index}/"), 4),
                    num_classes, "toy", group, name, str(index), seed)
    return TaskSource(name, group, scoring, num_tasks, build, "md" if scoring == EPISODES else "vtab")


@pytest.fixture
def suite():
    return Suite("toy", (_source("three", 3, POOLED, 1, "natural"),
                         _source("four", 4, POOLED, 1, "structured"),
                         _source("episodic", 5, EPISODES, 3, "md")))


RUN = RunInfo("toy", "toy_learner", "none@0", "", 0, 2)


def test_run_task_pools_over_query_chunks(suite):
    task = suite.task(suite.sources[0], 0, 0, 2)
    outcome = run_task(ToyLearner(wrong_every=3), task)
    # 10 query examples in chunks of 4, 4, 2; every 3rd of each chunk wrong: 2 + 2 + 1 = 5 wrong
    assert (outcome.correct, outcome.total) == (5, 10)


def test_failing_task_is_recorded_and_run_completes(suite, tmp_path):
    db = ResultsDB(tmp_path / "r.sqlite")
    summary = evaluate(suite, lambda: ToyLearner(fail_on=(4,)), RUN, db, image_size=2, progress=False)
    assert not summary.complete and summary.overall is None
    assert summary.failed == ("four/four: RuntimeError: cannot do 4 classes",)
    by = {s.source: s for s in summary.sources}
    assert by["three"].accuracy == 1.0 and by["episodic"].num_tasks == 3
    rows = db.rows(RUN)
    assert len(rows) == 5 and sum(r.status == "failed" for r in rows) == 1


def test_rerun_skips_finished_work_and_retries_failures(suite, tmp_path):
    db = ResultsDB(tmp_path / "r.sqlite")
    evaluate(suite, lambda: ToyLearner(fail_on=(4,)), RUN, db, image_size=2, progress=False)
    learner = ToyLearner()
    summary = evaluate(suite, lambda: learner, RUN, db, image_size=2, progress=False)
    assert learner.fits == 1  # only the failed task ran again
    assert summary.complete and summary.overall == pytest.approx(1.0)


def test_nan_and_wrong_shape_logits_fail_the_task(suite, tmp_path):
    class Bad(ToyLearner):
        def fit(self, support, num_classes, validation=None):
            class P(Predictor):
                def predict(self, query):
                    if num_classes == 3:
                        return np.full((len(query), 3), np.nan)
                    return np.zeros((len(query), num_classes + 1))
            return P()

    summary = evaluate(suite, Bad, RUN, ResultsDB(tmp_path / "r.sqlite"), image_size=2, progress=False)
    assert any("NaN" in f for f in summary.failed)
    assert any("shape (4, 5)" in f for f in summary.failed)


class InfoLearner(ToyLearner):
    """Records the TaskInfo of every fit."""

    def fit(self, support, num_classes, validation=None, info=None):
        self.infos = getattr(self, "infos", []) + [info]
        return super().fit(support, num_classes, validation)


class KwargsLearner(ToyLearner):
    def fit(self, support, num_classes, validation=None, **options):
        self.options = options
        return super().fit(support, num_classes, validation)


def test_learners_that_take_info_get_it_and_others_are_called_as_before(suite):
    info = TaskInfo("mini_dsprites_orientation", "vtab", 64.0 * 64.0)
    task = dataclasses.replace(suite.task(suite.sources[0], 0, 0, 2), info=info)
    taker, plain, kwargs = InfoLearner(), ToyLearner(), KwargsLearner()
    for learner in (taker, plain, kwargs):
        assert (run_task(learner, task).correct, learner.fits) == (10, 1)
    assert taker.infos == [info] and kwargs.options == {"info": info}
    # a Task built without info carries its source name
    run_task(taker, suite.task(suite.sources[2], 1, 0, 2))
    assert taker.infos[-1] == TaskInfo("episodic", "", None)


def test_accepts_info():
    class Keyword:
        def fit(self, support, num_classes, validation=None, *, info=None): ...

    assert accepts_info(InfoLearner().fit) and accepts_info(KwargsLearner().fit) and accepts_info(Keyword().fit)
    assert not accepts_info(ToyLearner().fit)
    assert not accepts_info(lambda support, num_classes, *info: None)  # *info is not a keyword
    assert not accepts_info(max)  # a builtin whose signature cannot be read: called as before
