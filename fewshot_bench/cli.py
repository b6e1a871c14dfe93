"""The ``fewshot-bench`` command line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from fewshot_bench.errors import ConfigError, FewshotBenchError


from fewshot_bench.paths import home


def run_evaluation(args: argparse.Namespace, suite_name: str, learner: str, backbone_name: str) -> int:
    from fewshot_bench.evaluation.evaluator import evaluate, pending, progress_bar, summarize_run
    from fewshot_bench.evaluation.job import EvalJob, package_versions, setup
    from fewshot_bench.evaluation.parallel import run_in_workers
    from fewshot_bench.evaluation.report import format_summary, summary_to_dict
    from fewshot_bench.evaluation.results import ResultsDB

    start = time.perf_counter()
    job = EvalJob(suite_name, learner, backbone_name, args.seed, args.image_size,
                  tuple(getattr(args, "gin_file", []) or []), tuple(getattr(args, "gin_param", []) or []),
                  tuple(sorted(_suite_options(args).items())),
                  None if args.no_feature_cache else str(args.feature_cache or home() / "features"))
    ctx = setup(job)
    results_path = Path(args.results) if args.results else home() / "results.sqlite"
    db = ResultsDB(results_path)
    versions = package_versions()
    reused = len(db.finished(ctx.run))
    if reused:
        print(f"{reused} finished tasks of this exact run are already in {results_path}: reusing them "
              f"(pass another --results path to recompute)")
    if args.runner == "beam":
        from fewshot_bench.evaluation.beam import run_beam

        db.start_run(ctx.run, ctx.suite, versions, args.allow_version_change)
        todo = [(source.name, index) for source, index in pending(ctx.suite, ctx.run, db)]
        run_beam(job, ctx.run, db, todo, args.beam_option, versions)
        summary = summarize_run(ctx.suite, ctx.run, db, args.partial)
    elif args.workers or args.task_timeout:
        db.start_run(ctx.run, ctx.suite, versions, args.allow_version_change)
        todo = pending(ctx.suite, ctx.run, db)
        bar = progress_bar(ctx.suite, ctx.run, len(todo), not args.no_progress)
        run_in_workers(job, ctx.suite, ctx.run, db, todo, workers=max(1, args.workers),
                       task_timeout=args.task_timeout, versions=versions, bar=bar)
        bar.close()
        summary = summarize_run(ctx.suite, ctx.run, db, args.partial)
    else:
        summary = evaluate(ctx.suite, ctx.make_learner, ctx.run, db, image_size=ctx.image_size,
                           progress=not args.no_progress, partial=args.partial, versions=versions,
                           allow_version_change=args.allow_version_change)
    title = (f"Suite {ctx.suite.name}  |  learner {learner}  |  backbone {ctx.backbone.id} at {ctx.image_size}px"
             f"  |  seed {args.seed}")
    print(format_summary(summary, title))
    print(f"\nResults database: {results_path}   wall time: {time.perf_counter() - start:.1f} s")
    if getattr(args, "summary", None):
        Path(args.summary).write_text(json.dumps(summary_to_dict(summary), indent=2))
    return 0 if summary.complete else 1


def _suite_options(args: argparse.Namespace) -> dict:
    options = {}
    for name in ("data_dir", "records_root", "episodes"):
        value = getattr(args, name, None)
        if value is not None:
            options[name] = value
    return options


QUICKSTART_IMAGE_SIZE = 128  # mini images are 28-64 px; 128 keeps a 2-core CPU run near a minute


def cmd_quickstart(args: argparse.Namespace) -> int:
    from data_prep.mini import default_mini_root, ensure_mini

    args.image_size = args.image_size or QUICKSTART_IMAGE_SIZE
    start = time.perf_counter()
    root = ensure_mini(default_mini_root(), seed=0)
    print(f"mini suite ready in {root} ({time.perf_counter() - start:.1f} s)")
    return run_evaluation(args, "mini", "linear_probe", "efficientnet_lite0")


def cmd_evaluate(args: argparse.Namespace) -> int:
    return run_evaluation(args, args.suite, args.learner, args.backbone)


def cmd_status(args: argparse.Namespace) -> int:
    from fewshot_bench.evaluation.results import ResultsDB

    path = Path(args.results) if args.results else home() / "results.sqlite"
    if not path.exists():
        raise ConfigError(f"no results database at {path}: pass --results PATH of an evaluation's database")
    runs = ResultsDB(path, read_only=True).runs()  # read-only: never writes a schema into another file
    if args.json:
        print(json.dumps(runs, indent=2))
        return 0
    for run in runs:
        totals = {k: sum(p[k] for p in run["sources"].values()) for k in ("done", "failed", "pending")}
        print(f"run {run['run_key']}: suite {run['suite']} | learner {run['learner']} | backbone {run['backbone']}"
              f" | config {run['config_hash']} | seed {run['seed']} | {run['image_size']}px  --  "
              f"{totals['done']} done, {totals['failed']} failed, {totals['pending']} pending")
        for name, part in run["sources"].items():
            print(f"    {name:<44} done {part['done']:>4}  failed {part['failed']:>3}  pending {part['pending']:>4}"
                  f"  of {part['expected']}")
    if not runs:
        print(f"{path}: no runs yet")
    return 0


def listing(rows: Sequence[tuple[str, str, str]]) -> list[str]:
    """Lines of ``(name, origin, description)`` rows, name and origin padded into columns."""
    name_width = max((len(row[0]) for row in rows), default=0)
    origin_width = max((len(row[1]) for row in rows), default=0)
    return [f"{name:<{name_width}}  {origin:<{origin_width}}  {description}".rstrip()
            for name, origin, description in rows]


def cmd_list(registry_name: str):
    def run(args: argparse.Namespace) -> int:
        if registry_name == "learners":
            from fewshot_bench.learners import LEARNERS as reg
        elif registry_name == "backbones":
            from fewshot_bench.backbones import BACKBONES as reg
        else:
            from fewshot_bench.suites import SUITES as reg
        for line in listing([(name, reg.origin(name), reg.description(name)) for name in reg.names()]):
            print(line)
        return 0
    return run


def cmd_tasks(args: argparse.Namespace) -> int:
    if args.suite == "mini":
        from fewshot_bench.datasets.mini import mini_vtab_specs
        from fewshot_bench.datasets.vtab import task_record

        records = [task_record(spec) for spec in mini_vtab_specs()]
    else:
        from fewshot_bench.datasets.vtab import list_tasks

        records = list_tasks(args.suite)
    for record in records:
        print(json.dumps(record) if args.json else
              f"{record['group']:<12} {record['name']:<66} {record['num_classes']:>4} classes  "
              f"{record['train800']} + {record['val200']} -> {record['test']}")
    return 0


def cmd_episodes(args: argparse.Namespace) -> int:
    from fewshot_bench.datasets.meta_dataset import describe_episodes

    for description in describe_episodes(args.spec, records_root=args.records, source=args.source,
                                         split=args.split, num=args.num, seed=args.seed):
        if args.json:
            print(json.dumps(description))
        else:
            ways = len(description["classes"])
            print(f"{ways}-way, support {sum(description['shots'])}, query {sum(description['query'])}: "
                  f"classes {description['classes']} shots {description['shots']}")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    if args.what == "vtab":
        from data_prep.vtab import main as vtab_main

        return vtab_main((["--data_dir", args.data_dir] if args.data_dir else [])
                         + (["--verify_only"] if args.check else []))
    if args.what == "mini":
        from data_prep.mini import main as mini_main

        mini_main((["--root", args.out] if args.out else []) + (["--force"] if args.force else []))
        return 0
    from data_prep.md_convert import run_prepare_md

    return run_prepare_md(args)


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    p.add_argument("--results", help="results database (default $FEWSHOT_BENCH_HOME/results.sqlite)")
    p.add_argument("--summary", help="also write the report as JSON to this path")
    p.add_argument("--image_size", type=int, help="input size (default: the backbone's own)")
    p.add_argument("--partial", action="store_true", help="report summary means even if tasks are missing")
    p.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    p.add_argument("--episodes", type=int, help="episodes per MD-style source (default: the suite's)")
    p.add_argument("--feature_cache", help="persistent feature cache (default $FEWSHOT_BENCH_HOME/features)")
    p.add_argument("--no_feature_cache", action="store_true", help="keep frozen features in memory only")
    p.add_argument("--workers", type=int, default=0,
                   help="run tasks in N worker processes (0: in this process)")
    p.add_argument("--task_timeout", type=float,
                   help="seconds after which a task is stopped and recorded as failed (runs in a worker)")
    p.add_argument("--runner", choices=["local", "beam"], default="local",
                   help="beam: run the tasks as an Apache Beam pipeline (pip install \"fewshot-bench[beam]\")")
    p.add_argument("--beam_option", action="append", default=[],
                   help="a Beam pipeline option, e.g. --beam_option=--runner=DataflowRunner (repeatable)")
    p.add_argument("--allow_version_change", action="store_true",
                   help="resume a run even if package versions changed since its first rows")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fewshot-bench", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("quickstart", help="build the offline `mini` suite and evaluate the linear probe on it")
    _add_run_options(p)
    p.set_defaults(func=cmd_quickstart)

    p = sub.add_parser("evaluate", help="evaluate a learner on a suite")
    p.add_argument("--suite", required=True)
    p.add_argument("--learner", required=True)
    p.add_argument("--backbone", required=True)
    p.add_argument("--gin_file", action="append", default=[])
    p.add_argument("--gin_param", action="append", default=[])
    p.add_argument("--data_dir", help="TFDS data directory (VTAB)")
    p.add_argument("--records_root", help="Meta-Dataset records root")
    _add_run_options(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("tasks", help="list the VTAB-style tasks of a suite with their split slices")
    p.add_argument("--suite", default="vtab-1k", choices=["vtab-1k", "vtab-v2", "mini"])
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=cmd_tasks)

    p = sub.add_parser("episodes", help="describe Meta-Dataset episodes (protocol only, or real records)")
    p.add_argument("--spec", help="a dataset_spec.json (describes the protocol's episodes)")
    p.add_argument("--records", help="records root (with --source: describes real episodes)")
    p.add_argument("--source")
    p.add_argument("--split", default="test", choices=["train", "valid", "test"])
    p.add_argument("--num", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=cmd_episodes)

    p = sub.add_parser("prepare", help="prepare data: vtab (TFDS), mini (the offline suite), md (convert or check)")
    p.add_argument("what", choices=["vtab", "mini", "md"])
    p.add_argument("--data_dir", help="vtab: TFDS data directory")
    p.add_argument("--out", help="mini: where to build (default $FEWSHOT_BENCH_HOME/mini)")
    p.add_argument("--force", action="store_true", help="mini: rebuild even if intact")
    p.add_argument("--check", action="store_true", help="verify instead of preparing")
    p.add_argument("--records", help="md: records root")
    p.add_argument("--source", help="md: source name")
    from data_prep.md_convert import add_md_arguments
    from data_prep.episodes_share import add_commands as add_episode_sharing

    add_md_arguments(p)
    p.set_defaults(func=cmd_prepare)
    add_episode_sharing(sub)
    from fewshot_bench.leaderboard.commands import add_commands as add_leaderboard_commands

    add_leaderboard_commands(sub)
    from fewshot_bench.backbones.commands import add_commands as add_cache_commands
    from fewshot_bench.learners.train_command import add_commands as add_train_commands

    add_cache_commands(sub)
    add_train_commands(sub)

    p = sub.add_parser("status", help="done / failed / pending tasks of every run in a results database")
    p.add_argument("--results", help="results database (default $FEWSHOT_BENCH_HOME/results.sqlite)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    for name in ("learners", "backbones", "suites"):
        sub.add_parser(name, help=f"list the {name}: built-in and plugins, with origin and description"
                       ).set_defaults(func=cmd_list(name))
    return parser


NO_TENSORFLOW = {"report", "submission", "leaderboard", "status",  # commands that never touch a model
                 "learners", "backbones", "suites"}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command not in NO_TENSORFLOW:
        from fewshot_bench.evaluation.job import quiet_tensorflow

        quiet_tensorflow()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return args.func(args)
    except BrokenPipeError:  # output piped into `head` and the like
        return 0
    except FewshotBenchError as e:
        print(f"fewshot-bench: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
