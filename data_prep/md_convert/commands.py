"""``fewshot-bench prepare md``: convert a source (``--source --raw --out``) or check one (``--check``).

The ``prepare`` sub-parser of ``fewshot_bench.cli`` already has ``--out``,
``--check``, ``--records`` and ``--source``; :func:`add_md_arguments` adds the
conversion options and :func:`run_prepare_md` runs the ``md`` branch.
"""

from __future__ import annotations

import argparse

from fewshot_bench.errors import ConfigError


def add_md_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--raw``, ``--splits``, ``--lists``, ``--workers``, ``--seed`` and ``--no_progress``."""
    from data_prep.md_convert.splits import REFERENCE_SEED

    parser.add_argument("--raw", help="md: the source's raw download folder (see the layout in its error message)")
    parser.add_argument("--splits", help="md: the source's split file <source>_splits.json, or the folder of "
                                         "them (default: the reference's seeded split rule)")
    parser.add_argument("--lists", help="md: folder of the reference lists (ImageNet_*_duplicates.txt, "
                                        "VggFlower_labels.txt, TrafficSign_labels.txt)")
    parser.add_argument("--workers", type=int, default=2, help="md: processes converting classes (default 2)")
    parser.add_argument("--seed", type=int, default=REFERENCE_SEED,
                        help=f"md: seed of the split rule and the traffic-sign shuffle (default {REFERENCE_SEED}, "
                             f"the reference's)")
    parser.add_argument("--no_progress", action="store_true", help="md: hide the progress bar")


def run_prepare_md(args: argparse.Namespace) -> int:
    """Check (``--check --records ROOT --source NAME``) or convert (``--source NAME --raw DIR --out ROOT``)."""
    if args.check:
        from fewshot_bench.datasets.meta_dataset import check_source

        if not (args.records and args.source):
            raise ConfigError("prepare md --check: pass --records ROOT --source NAME")
        problems = check_source(args.records, args.source)
        print("\n".join(problems) if problems else f"{args.source}: spec and records agree, every image decodes")
        if problems:
            print(f"{len(problems)} problems in {args.source}")
        return 1 if problems else 0
    from data_prep.md_convert.convert import SOURCES, convert_source

    out = args.out or args.records
    if not (args.source and args.raw and out):
        raise ConfigError(f"prepare md: pass --source NAME --raw DIR --out ROOT to convert "
                          f"(sources: {', '.join(SOURCES)}), or --check --records ROOT --source NAME to check")
    report = convert_source(args.source, args.raw, out, splits=args.splits, lists=args.lists,
                            workers=args.workers, seed=args.seed, progress=not args.no_progress)
    print(report.summary())
    print(f"check it with: fewshot-bench prepare md --check --records {out} --source {args.source}")
    return 0
