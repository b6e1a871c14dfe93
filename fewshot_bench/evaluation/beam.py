"""The evaluation as an Apache Beam pipeline: pending tasks -> adapt and evaluate -> result rows.

Runs with the DirectRunner locally and with any Beam runner (Dataflow, Flink,
Spark) through pipeline options. Workers rebuild the suite, backbone and
learner from the picklable :class:`EvalJob` once per DoFn instance; every
task yields one JSON row, written as text shards under ``<results>.beam/``,
then merged into the SQLite results database by the driver, so Beam runs give
the same database and the same scores as in-process runs.

Apache Beam is an optional extra: ``pip install "fewshot-bench[beam]"``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, Sequence

from fewshot_bench.errors import ConfigError
from fewshot_bench.evaluation.job import EvalJob, setup
from fewshot_bench.evaluation.results import ResultsDB, RunInfo
from fewshot_bench.evaluation.scores import Row


def _beam():
    try:
        import apache_beam as beam
    except ImportError as e:
        raise ConfigError("--runner beam needs Apache Beam: pip install \"fewshot-bench[beam]\"") from e
    return beam


def row_to_json(row: Row, fingerprint: str, seconds: float) -> str:
    return json.dumps({"row": row.__dict__, "fingerprint": fingerprint, "seconds": seconds}, sort_keys=True)


def row_from_json(line: str) -> tuple[Row, str, float]:
    record = json.loads(line)
    return Row(**record["row"]), record["fingerprint"], record["seconds"]


def _evaluate_fn(job: EvalJob):
    beam = _beam()

    class EvaluateTask(beam.DoFn):
        """Adapts and evaluates one (source, index) task; yields its row as JSON."""

        def setup(self) -> None:
            from fewshot_bench.evaluation.job import quiet_tensorflow

            quiet_tensorflow()
            self.ctx = setup(job)
            self.learner = self.ctx.make_learner()

        def process(self, item: tuple[str, int]) -> Iterator[str]:
            from fewshot_bench.evaluation.evaluator import attempt_task

            source_name, index = item
            ctx = self.ctx
            row, fingerprint, seconds = attempt_task(ctx.suite, ctx.suite.source(source_name), index,
                                                     self.learner, ctx.run, ctx.image_size)
            yield row_to_json(row, fingerprint, seconds)

    return EvaluateTask()


def run_beam(job: EvalJob, run: RunInfo, results: ResultsDB, todo: Sequence[tuple[str, int]],
             pipeline_args: Sequence[str], versions: dict) -> int:
    """Evaluate ``todo`` with Beam, then merge the rows into ``results``; returns rows merged."""
    beam = _beam()
    from apache_beam.options.pipeline_options import PipelineOptions

    out_dir = Path(str(results.path) + ".beam") / run.key
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("rows*"):
        old.unlink()
    prefix = str(out_dir / "rows")
    with beam.Pipeline(options=PipelineOptions(list(pipeline_args))) as pipeline:
        (pipeline
         | "Tasks" >> beam.Create(list(todo))
         | "Reshuffle" >> beam.Reshuffle()
         | "AdaptAndEvaluate" >> beam.ParDo(_evaluate_fn(job))
         | "Rows" >> beam.io.WriteToText(prefix, file_name_suffix=".jsonl"))
    merged = 0
    for shard in sorted(out_dir.glob("rows*.jsonl")):
        for line in shard.read_text().splitlines():
            row, fingerprint, seconds = row_from_json(line)
            results.record(run, row, fingerprint=fingerprint, seconds=seconds, versions=versions)
            merged += 1
    return merged
