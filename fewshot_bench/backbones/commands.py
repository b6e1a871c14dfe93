"""The ``fewshot-bench cache`` command: show, prune and verify the persistent feature cache.

    fewshot-bench cache show   [--dir DIR] [--json]
    fewshot-bench cache prune  [--dir DIR] (--all | [--stale] [--backbone NAME] [--unused_days N]) [--dry_run]
    fewshot-bench cache verify [--dir DIR]

``--dir`` defaults to ``$FEWSHOT_BENCH_HOME/features``. ``prune`` always removes
files left by killed writers (older than an hour) and shards no entry uses.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Optional

from fewshot_bench.backbones.feature_cache import CODE_VERSION, default_cache_dir, describe, prune, verify
from fewshot_bench.errors import ConfigError


def _existing_cache(args: argparse.Namespace) -> Optional[Path]:
    """The cache directory of ``--dir`` (default: the evaluations' cache), or None (said) if it holds none."""
    root = Path(args.dir) if args.dir else default_cache_dir()
    if not (root / "index.sqlite").is_file():
        print(f"no feature cache in {root}")
        return None
    return root


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def _layers(layers: list[str]) -> str:
    text = ",".join(layers)
    return text if len(text) <= 40 else f"{len(layers)} layers ({layers[0]}..{layers[-1]})"


def cmd_show(args: argparse.Namespace) -> int:
    root = _existing_cache(args)
    if root is None:
        return 0
    infos = describe(root)
    if args.json:
        for info in infos:
            print(json.dumps({**dataclasses.asdict(info), "stale": info.stale}))
        return 0
    print(f"feature cache {root} (code version {CODE_VERSION})")
    for info in infos:
        p = info.parts
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(info.last_used))
        side = "x".join(str(s) for s in p["image_shape"][:2])
        print(f"  {info.key[:12]}  {p['backbone']:<40} {side:>7}px  {_layers(p['layers']):<40} {p['pooling']:<4} "
              f"{p['precision']:<13} {info.entries:>8} entries  {_mib(info.bytes):>11}  used {used}"
              f"{'  STALE (code v%s)' % p['code_version'] if info.stale else ''}")
    total = sum(i.bytes for i in infos)
    print(f"{len(infos)} namespaces, {sum(i.entries for i in infos)} entries, {_mib(total)}")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    root = _existing_cache(args)
    if root is None:
        return 0
    if args.all and (args.stale or args.backbone or args.unused_days is not None):
        raise ConfigError("cache prune: --all removes everything; it takes no other filter")
    report = prune(root, everything=args.all, stale=args.stale, backbone=args.backbone,
                   unused_days=args.unused_days, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    print(f"{verb} {len(report.namespaces)} namespaces and {len(report.files)} leftover files, "
          f"{_mib(report.bytes)}")
    for key in report.namespaces:
        print(f"  namespace {key}")
    for path in report.files:
        print(f"  file {path}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    root = _existing_cache(args)
    if root is None:
        return 0
    counts = verify(root)
    print(f"checked {counts['checked']} entries; dropped {counts['dropped']} that failed their checksum "
          f"(they are recomputed on next use)")
    return 0


def add_commands(subparsers) -> None:
    """Add ``cache show|prune|verify`` to the ``fewshot-bench`` sub-commands."""
    cache = subparsers.add_parser("cache", help="show, prune or verify the persistent feature cache")
    actions = cache.add_subparsers(dest="cache_command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--dir", help="cache directory (default $FEWSHOT_BENCH_HOME/features)")

    p = actions.add_parser("show", help="list namespaces (backbone, size, layers, pooling) with sizes")
    common(p)
    p.add_argument("--json", action="store_true", help="one JSON object per namespace")
    p.set_defaults(func=cmd_show)

    p = actions.add_parser("prune", help="remove namespaces by filter, and leftovers of interrupted writes")
    common(p)
    p.add_argument("--all", action="store_true", help="remove every namespace")
    p.add_argument("--stale", action="store_true", help=f"namespaces of another code version than {CODE_VERSION}")
    p.add_argument("--backbone", help="namespaces of this backbone (name, or name@weights id)")
    p.add_argument("--unused_days", type=float, help="namespaces not used for this many days")
    p.add_argument("--dry_run", action="store_true", help="only say what would be removed")
    p.set_defaults(func=cmd_prune)

    p = actions.add_parser("verify", help="check every entry's checksum; drop the bad ones")
    common(p)
    p.set_defaults(func=cmd_verify)
