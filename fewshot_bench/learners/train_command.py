"""``fewshot-bench train``: meta-train a backbone with ProtoNet or fo-Proto-MAML on MD training episodes.

Example (offline, a minute on a CPU)::

    fewshot-bench train --learner protonet --backbone conv4 --suite mini --image_size 28 \\
        --steps 200 --out runs/protonet_conv4_mini
    fewshot-bench evaluate --suite mini --learner protonet \\
        --backbone "meta_trained(path='runs/protonet_conv4_mini')"

Rerunning the same command resumes from the latest checkpoint (a larger
``--steps`` trains further).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def cmd_train(args: argparse.Namespace) -> int:
    from fewshot_bench.backbones import BACKBONES
    from fewshot_bench.evaluation.job import check_names, import_configurables, parse_gin
    from fewshot_bench.learners import LEARNERS
    from fewshot_bench.learners.meta_training import TrainConfig, meta_train, training_sources

    import_configurables()
    check_names(learner=(LEARNERS, args.learner), backbone=(BACKBONES, args.backbone))
    LEARNERS.make_configurable(args.learner)
    BACKBONES.make_configurable(args.backbone)
    gin_text = parse_gin(tuple(args.gin_file), tuple(args.gin_param))
    sources = [s for s in (args.sources or "").split(",") if s] or None
    records_root, sources = training_sources(args.suite, args.records_root, sources)
    backbone = BACKBONES.create(args.backbone, **({"image_size": args.image_size} if args.image_size else {}))
    config = TrainConfig(learner=args.learner, backbone=args.backbone, image_size=backbone.image_size,
                         records_root=str(records_root), sources=sources, steps=args.steps, seed=args.seed,
                         learning_rate=args.learning_rate, checkpoint_every=args.checkpoint_every,
                         ways=args.ways, shots=args.shots, queries=args.queries, config=gin_text)
    learner = LEARNERS.create(args.learner, backbone=backbone, seed=args.seed)
    start = time.perf_counter()
    state = meta_train(learner, config, args.out, log_every=args.log_every)
    out = Path(args.out)
    print(f"\ntrained {state.get('steps_done')} steps of {args.learner} on {', '.join(sources)} "
          f"({state.get('train_seconds', 0.0):.1f} s of training in all, {time.perf_counter() - start:.1f} s now)")
    print(f"evaluate it with:  fewshot-bench evaluate --suite {args.suite} --learner {args.learner} "
          f"--backbone \"meta_trained(path='{out}')\"")
    return 0


def add_commands(subparsers) -> None:
    """Add ``train`` to the ``fewshot-bench`` sub-commands."""
    p = subparsers.add_parser("train", help="meta-train a backbone (protonet, protomaml) on MD training episodes")
    p.add_argument("--learner", required=True, help="protonet or protomaml")
    p.add_argument("--backbone", required=True, help="a trainable backbone, e.g. conv4 or resnet18")
    p.add_argument("--out", required=True, help="run directory: checkpoints, trained weights, logs (resumed)")
    p.add_argument("--suite", default="mini",
                   help="whose training sources: mini (offline), md-v2 (ilsvrc_2012_v2) or md-v1")
    p.add_argument("--records_root", help="Meta-Dataset records root (md-v1 / md-v2; mini: built on demand)")
    p.add_argument("--sources", help="comma-separated training sources (default: the suite's)")
    p.add_argument("--steps", type=int, default=1000, help="training episodes in all (default 1000)")
    p.add_argument("--image_size", type=int, help="input size (default: the backbone's own)")
    p.add_argument("--learning_rate", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    p.add_argument("--checkpoint_every", type=int, default=100, help="steps between checkpoints (default 100)")
    p.add_argument("--log_every", type=int, default=10, help="steps between progress lines (default 10)")
    p.add_argument("--ways", type=int, help="fixed episodes: classes (with --shots and --queries)")
    p.add_argument("--shots", type=int, help="fixed episodes: support examples per class")
    p.add_argument("--queries", type=int, help="fixed episodes: query examples per class")
    p.add_argument("--seed", type=int, default=0, help="seed of the episode stream (default 0)")
    p.add_argument("--gin_file", action="append", default=[])
    p.add_argument("--gin_param", action="append", default=[])
    p.set_defaults(func=cmd_train)
