"""Command line: ``fewshot-bench report``, ``submission export|check`` and ``leaderboard``.

``add_commands(subparsers)`` adds the three sub-commands to the
``fewshot-bench`` parser.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Optional, Sequence

from fewshot_bench.errors import ConfigError, DataError

# What the shipped backbones were pretrained on.
BOARD_BACKBONES = {"efficientnet_lite0": "ILSVRC-2012 (ImageNet-1k) classification"}
BOARD_NAME = "board"
BOARD_TITLE = "fewshot_bench leaderboard: published references and the mini suite"


def load_inputs(paths: Sequence[str | Path]) -> tuple[list, list[str]]:
    """Submissions from results databases, ``.json`` / ``.jsonl`` files and folders of them, and notes."""
    from fewshot_bench.leaderboard.export import export_runs, is_results_db
    from fewshot_bench.leaderboard.submission import read_submissions

    submissions, notes = [], []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix in (".json", ".jsonl") and p.is_file())
            if not files:
                raise DataError(f"{path}: folder holds no .json or .jsonl submission files")
            for f in files:
                submissions += read_submissions(f)
        elif is_results_db(path):
            subs, run_notes = export_runs(path)
            submissions += subs
            notes += run_notes
        elif path.suffix in (".json", ".jsonl"):
            submissions += read_submissions(path)
        else:
            raise DataError(f"{path}: not a results database (SQLite), a submission (.json), a list of "
                            "submissions (.jsonl) or a folder of them")
    return submissions, notes


def write_board(board, out: Path, name: str, title: str, inputs: Sequence[str],
                generator: str = "fewshot-bench report") -> list[Path]:
    """Write ``name.md``, ``name.csv`` and ``name.html`` into ``out``."""
    from fewshot_bench.leaderboard.render import render_csv, render_html, render_markdown

    out.mkdir(parents=True, exist_ok=True)
    files = {out / f"{name}.md": render_markdown(board, title, inputs, generator),
             out / f"{name}.csv": render_csv(board),
             out / f"{name}.html": render_html(board, title, inputs, generator)}
    for path, text in files.items():
        path.write_text(text, encoding="utf-8")
    return list(files)


def cmd_report(args: argparse.Namespace) -> int:
    from fewshot_bench.leaderboard.render import render_markdown
    from fewshot_bench.leaderboard.tables import build_board

    submissions, notes = load_inputs(args.inputs)
    if not submissions:
        raise DataError("no results to report: the inputs hold no submission and no finished run of a protocol")
    board = build_board(submissions, mix_protocols=args.mix_protocols, protocols=args.protocol, notes=notes)
    if args.out:
        for path in write_board(board, Path(args.out), args.name, args.title, args.inputs):
            print(path)
    else:
        print(render_markdown(board, args.title, args.inputs), end="")
    return 0


def cmd_submission_export(args: argparse.Namespace) -> int:
    from fewshot_bench.leaderboard.export import export_runs
    from fewshot_bench.leaderboard.submission import write_submissions

    subs, notes = export_runs(args.results, method=args.method, pretraining_data=args.pretraining_data,
                              image_size=args.image_size, run_keys=set(args.run) if args.run else None)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if not subs:
        raise DataError(f"{args.results}: no run to export (see the notes above)")
    if Path(args.out).suffix == ".json" and len(subs) > 1:
        keys = ", ".join(s.provenance["run_key"] for s in subs)
        raise ConfigError(f"{args.results} holds {len(subs)} runs ({keys}); choose one with --run KEY, "
                          "or write all of them to a .jsonl file")
    write_submissions(args.out, subs)
    print(f"{args.out}: {len(subs)} submission(s)")
    return 0


def cmd_submission_check(args: argparse.Namespace) -> int:
    from fewshot_bench.leaderboard.submission import read_submissions

    failed = 0
    for path in args.files:
        try:
            subs = read_submissions(path)
        except DataError as e:
            print(e, file=sys.stderr)
            failed += 1
        else:
            print(f"{path}: {len(subs)} valid submission(s)")
    return 1 if failed else 0


def _evaluate_mini(learner: str, backbone: str, image_size: int, results: Path) -> None:
    """``fewshot-bench evaluate`` on mini in a fresh process (each learner's gin state stays its own)."""
    command = [sys.executable, "-m", "fewshot_bench.cli", "evaluate", "--suite", "mini", "--learner", learner,
               "--backbone", backbone, "--image_size", str(image_size), "--results", str(results), "--no_progress"]
    print("+ " + " ".join(command), flush=True)
    if subprocess.run(command, check=False).returncode != 0:
        raise DataError(f"evaluating {learner} on mini failed (see above); the board was not regenerated")


def mini_board_submissions(results: Path, learners: Sequence[str], backbone: str,
                           size: int) -> tuple[list, list[str]]:
    """The mini runs of ``learners`` on ``backbone`` at ``size`` px, default configuration, seed 0."""
    from fewshot_bench.evaluation.results import RunInfo
    from fewshot_bench.leaderboard.export import export_runs

    pretraining = BOARD_BACKBONES[backbone]
    # The configuration hash of `fewshot-bench evaluate` without gin files or bindings, at `size` px.
    hashes = {RunInfo("mini", learner, "", f"{learner}\n", 0, size).config_hash for learner in learners}
    subs, notes = export_runs(results, pretraining_data=pretraining, image_size=size, config_hashes=hashes)
    subs = [s for s in subs if s.protocol == "mini" and s.provenance["seed"] == 0 and s.backbone == backbone]
    missing = sorted(set(learners) - {s.provenance["learner"] for s in subs})
    if missing:
        raise DataError(f"{results} has no default-configuration mini run of {', '.join(missing)} on {backbone} "
                        f"at {size} px with seed 0; add --evaluate to run them")
    return subs, notes


def regenerate_board(root: Path, results: Optional[Path] = None, learners: Sequence[str] = (),
                     backbone: str = "efficientnet_lite0", image_size: Optional[int] = None) -> list[Path]:
    """Rebuild ``root/board.{md,csv,html}`` from ``root/references`` and ``root/mini``.

    With ``results``, ``root/mini/results.jsonl`` is first rewritten from the
    mini runs of ``learners`` in that database.
    """
    from fewshot_bench.leaderboard.submission import read_submissions, write_submissions
    from fewshot_bench.leaderboard.tables import build_board

    references, mini = root / "references", root / "mini"
    if not references.is_dir():
        raise ConfigError(f"{references} does not exist: run from the repository root or pass --root "
                          "the leaderboards folder")
    notes: list[str] = []
    if results is not None:
        if image_size is None:
            raise ConfigError("regenerating mini results needs the image size of the runs to take")
        subs, notes = mini_board_submissions(results, learners, backbone, image_size)
        write_submissions(mini / "results.jsonl", subs)
    files = sorted(p for folder in (references, mini) if folder.is_dir()
                   for p in folder.glob("*.json*") if p.suffix in (".json", ".jsonl"))
    submissions = [s for f in files for s in read_submissions(f)]
    inputs = [p.relative_to(root.parent).as_posix() for p in files]
    board = build_board(submissions, notes=[n.replace(str(results), results.name) for n in notes])
    return write_board(board, root, BOARD_NAME, BOARD_TITLE, inputs, "fewshot-bench leaderboard")


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from fewshot_bench.cli import QUICKSTART_IMAGE_SIZE, home

    if args.backbone not in BOARD_BACKBONES:
        raise ConfigError(f"--backbone {args.backbone!r}: the board knows the pretraining data of "
                          f"{', '.join(BOARD_BACKBONES)} only")
    learners = args.learner
    if not learners:
        from fewshot_bench.learners import LEARNERS

        learners = LEARNERS.names()
    size = args.image_size or QUICKSTART_IMAGE_SIZE
    results = Path(args.results) if args.results else (home() / "results.sqlite" if args.evaluate else None)
    if args.evaluate:
        for learner in learners:
            _evaluate_mini(learner, args.backbone, size, results)
    for path in regenerate_board(Path(args.root), results, learners, args.backbone, size):
        print(path)
    return 0


def add_commands(subparsers) -> None:
    """Add ``report``, ``submission`` and ``leaderboard`` to the ``fewshot-bench`` parser."""
    p = subparsers.add_parser(
        "report", help="rank results databases, submissions and references: Markdown, CSV and one HTML page")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="results database (SQLite), submission (.json), submissions (.jsonl) or a folder of them")
    p.add_argument("--out", help="folder to write NAME.md, NAME.csv and NAME.html into (default: Markdown on stdout)")
    p.add_argument("--name", default="leaderboard", help="file name stem under --out (default leaderboard)")
    p.add_argument("--title", default="fewshot_bench leaderboard")
    p.add_argument("--protocol", action="append", metavar="P",
                   help="keep only protocol P (vtab-1k, vtab-v2, md-v1, md-v2, vtab+md, mini); repeatable")
    p.add_argument("--mix_protocols", action="store_true",
                   help="rank different protocol versions of a benchmark in one table (refused by default)")
    p.set_defaults(func=cmd_report)

    p = subparsers.add_parser("submission", help="export a results database as submissions, or check submissions")
    sub = p.add_subparsers(dest="submission_command", required=True)
    e = sub.add_parser("export", help="write the runs of a results database as submission JSON")
    e.add_argument("--results", required=True, help="results database written by `fewshot-bench evaluate`")
    e.add_argument("--out", required=True, help="FILE.json (one run) or FILE.jsonl (one line per run)")
    e.add_argument("--run", action="append", metavar="KEY", help="export only this run key (repeatable)")
    e.add_argument("--method", help="method name (default: the learner name)")
    e.add_argument("--pretraining_data", default="not stated", help="what the backbone was pretrained on")
    e.add_argument("--image_size", type=int, help="input size in pixels the run used")
    e.set_defaults(func=cmd_submission_export)
    c = sub.add_parser("check", help="validate submission files against the schema and their protocol")
    c.add_argument("files", nargs="+", metavar="FILE")
    c.set_defaults(func=cmd_submission_check)

    p = subparsers.add_parser(
        "leaderboard", help="regenerate leaderboards/board.{md,csv,html} from the references and the mini results")
    p.add_argument("--root", default="leaderboards", help="the leaderboards folder (default ./leaderboards)")
    p.add_argument("--evaluate", action="store_true",
                   help="first evaluate the learners on mini (finished tasks are reused), refresh mini/results.jsonl")
    p.add_argument("--results", help="results database holding the mini runs (default with --evaluate: "
                                     "$FEWSHOT_BENCH_HOME/results.sqlite); refreshes mini/results.jsonl")
    p.add_argument("--learner", action="append", help="learners to include (default: every registered one)")
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--image_size", type=int, help="input size (default: quickstart's, so its run is reused)")
    p.set_defaults(func=cmd_leaderboard)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run these commands without the rest of the CLI (``python -m fewshot_bench.leaderboard.commands``)."""
    from fewshot_bench.errors import FewshotBenchError

    parser = argparse.ArgumentParser(prog="fewshot-bench", description=__doc__)
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except FewshotBenchError as e:
        print(f"fewshot-bench: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
