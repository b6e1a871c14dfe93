"""Fixed Meta-Dataset episodes for sharing: dump N episodes of a source, read them back, check they match.

Two forms, both built on ``fewshot_bench.datasets.meta_dataset.manifest``:

- a manifest (``--out episodes.jsonl``): the image ids and labels of every
  episode; the other lab replays it on its own records
  (``manifest_source(path, records_root)``);
- a full dump (``--pixels --out DIR``): the manifest plus every image's original
  encoded bytes; the other lab needs no records (``dumped_source(DIR)``).

Either way a digest file (``<manifest>.digests.json``, or ``DIR/digests.json``)
holds, per episode, a sha256 of the encoded bytes of its images in Task order:
reading back recomputes it from the records (manifest) or the dump, so a lab
whose converted records differ (another conversion, a damaged copy) is told
before it evaluates. The episode fingerprints (ids and labels) are checked too.

Commands (``add_commands``)::

    fewshot-bench dump-episodes --records ROOT --source NAME --out PATH [--split test] [--num 600]
                                [--start 0] [--seed 0] [--pixels]
    fewshot-bench read-episodes PATH [--records ROOT] [--image_size 84] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Iterable, Optional

from fewshot_bench.datasets.meta_dataset.manifest import (MANIFEST_FILE, dump_episodes, dumped_source,
                                                          entry_layout, manifest_source, read_manifest,
                                                          write_manifest)
from fewshot_bench.datasets.meta_dataset.reader import SourceReader, parse_example
from fewshot_bench.errors import ConfigError, DataError
from fewshot_bench.tasks import fingerprint

DUMP_DIGESTS = "digests.json"


def digest(images: Iterable[bytes]) -> str:
    """sha256 over the encoded images, each prefixed by its length."""
    h = hashlib.sha256()
    for data in images:
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def _record_images(reader: SourceReader, entry: dict) -> list[bytes]:
    """The encoded images of a manifest entry, read from the records, support then query in Task order."""
    layout = entry_layout(entry)
    return [parse_example(reader.read_raw(c, [r])[0], reader.where(c, r))[0]
            for role in (layout.support, layout.query) for c, r, _ in role]


def _dump_images(path: Path) -> list[bytes]:
    """The encoded images of one dumped episode file, in file order (support then query)."""
    import tensorflow as tf

    if not path.is_file():
        raise DataError(f"episode dump file {path} is missing; dump the episodes again")
    return [tf.train.Example.FromString(record).features.feature["image"].bytes_list.value[0]
            for record in tf.data.TFRecordDataset(str(path)).as_numpy_iterator()]


def _digests_path(path: Path) -> Path:
    return path / DUMP_DIGESTS if path.is_dir() else path.with_name(path.stem + ".digests.json")


def share_episodes(records_root: str | Path, source: str, out: str | Path, *, split: str = "test",
                   num: int = 600, start: int = 0, seed: int = 0, pixels: bool = False) -> Path:
    """Write episodes ``start .. start + num - 1`` of ``source`` as a manifest (a ``.jsonl`` path) or,
    with ``pixels``, as a full dump (a directory); plus their content digests. Returns ``out``."""
    out = Path(out)
    indices = range(start, start + num)
    if pixels:
        dump_episodes(out, records_root, source, split, seed, indices)
        manifest = out / MANIFEST_FILE
    else:
        if out.suffix != ".jsonl":
            raise ConfigError(f"dump-episodes: a manifest path ends in .jsonl (got {out}); "
                              f"add --pixels to write a full dump into a directory")
        manifest = write_manifest(out, records_root, source, split, seed, indices)
    reader = SourceReader(Path(records_root) / source)
    digests = {str(e["index"]): digest(_record_images(reader, e)) for e in read_manifest(manifest)[1]}
    _digests_path(out).write_text(json.dumps(digests, indent=1))
    return out


def read_shared(path: str | Path, records_root: Optional[str | Path] = None, image_size: int = 84) -> list[dict]:
    """Read shared episodes back (a dump directory, or a manifest replayed on ``records_root``).

    One dict per episode: ``index``, ``ways``, ``support``, ``query`` (image
    counts), ``fingerprint_ok`` (the Task built has the manifest's fingerprint)
    and ``content_ok`` (its images have the digest written with the episodes).
    """
    path = Path(path)
    is_dump = path.is_dir()
    manifest = path / MANIFEST_FILE if is_dump else path
    header, entries = read_manifest(manifest)
    if is_dump:
        tasks = dumped_source(path)
    elif records_root is None:
        raise ConfigError(f"read-episodes {path}: a manifest holds ids only; pass --records ROOT (the records "
                          f"of source {header['source']!r}) or share a full dump (--pixels)")
    else:
        tasks = manifest_source(manifest, records_root)
    digests_file = _digests_path(path)
    digests = json.loads(digests_file.read_text()) if digests_file.is_file() else {}
    reader = None if is_dump else SourceReader(Path(records_root) / header["source"])
    out = []
    for position, entry in enumerate(entries):
        task = tasks.build(position, header["seed"], image_size)
        images = (_dump_images(path / f"episode_{entry['index']}.tfrecords") if is_dump
                  else _record_images(reader, entry))
        expected = digests.get(str(entry["index"]))
        out.append({"index": entry["index"], "ways": task.num_classes, "support": len(task.support),
                    "query": sum(len(batch) for batch in task.query),
                    "fingerprint_ok": fingerprint(task.support, task.query) == entry["fingerprint"],
                    "content_ok": None if expected is None else digest(images) == expected})
    return out


def cmd_dump(args: argparse.Namespace) -> int:
    out = share_episodes(args.records, args.source, args.out, split=args.split, num=args.num, start=args.start,
                         seed=args.seed, pixels=args.pixels)
    kind = "full dump" if args.pixels else "manifest"
    print(f"{args.source}: episodes {args.start}..{args.start + args.num - 1} of the {args.split} split "
          f"(seed {args.seed}) written as a {kind} to {out}")
    return 0


def cmd_read(args: argparse.Namespace) -> int:
    episodes = read_shared(args.path, args.records, args.image_size)
    for e in episodes:
        print(json.dumps(e) if args.json else
              f"episode {e['index']}: {e['ways']}-way, support {e['support']}, query {e['query']}, "
              f"fingerprint {'ok' if e['fingerprint_ok'] else 'DIFFERS'}, "
              f"images {({True: 'ok', False: 'DIFFER', None: 'unchecked (no digests)'})[e['content_ok']]}")
    bad = [e["index"] for e in episodes if not e["fingerprint_ok"] or e["content_ok"] is False]
    if bad:
        print(f"{len(bad)} of {len(episodes)} episodes differ from the shared ones: {bad}")
        return 1
    print(f"{len(episodes)} episodes read back, all identical to the shared ones")
    return 0


def add_commands(subparsers) -> None:
    """``dump-episodes`` and ``read-episodes``."""
    p = subparsers.add_parser("dump-episodes", help="write fixed Meta-Dataset episodes to share (ids or pixels)")
    p.add_argument("--records", required=True, help="records root")
    p.add_argument("--source", required=True)
    p.add_argument("--out", required=True, help="a .jsonl manifest, or a directory with --pixels")
    p.add_argument("--split", default="test", choices=["train", "valid", "test"])
    p.add_argument("--num", type=int, default=600, help="number of episodes (default 600)")
    p.add_argument("--start", type=int, default=0, help="index of the first episode (default 0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pixels", action="store_true", help="also store every image (a full dump)")
    p.set_defaults(func=cmd_dump)
    p = subparsers.add_parser("read-episodes", help="read shared episodes back and check they are the same")
    p.add_argument("path", help="a manifest .jsonl or a dump directory")
    p.add_argument("--records", help="records root (needed for a manifest)")
    p.add_argument("--image_size", type=int, default=84)
    p.add_argument("--json", action="store_true", help="one JSON object per episode")
    p.set_defaults(func=cmd_read)
