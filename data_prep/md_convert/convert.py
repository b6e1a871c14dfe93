"""Convert one Meta-Dataset source from its raw download into the reference records layout."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Callable, Optional

from data_prep import md_records
from data_prep.md_convert import (aircraft, cu_birds, dtd, fungi, ilsvrc, mscoco, omniglot, quickdraw,
                                  traffic_sign, vgg_flower)
from data_prep.md_convert.common import Plan
from data_prep.md_convert.splits import REFERENCE_SEED
from data_prep.md_convert.writer import write_classes
from fewshot_bench.errors import ConfigError

logger = logging.getLogger("data_prep.md_convert")

Planner = Callable[[Path, Optional[Path], Optional[Path], int], Plan]

# Source name (the records sub-folder) -> planner(raw, split file, lists dir, seed).
SOURCES: dict[str, Planner] = {
    "omniglot": omniglot.plan,
    "aircraft": aircraft.plan,
    "cu_birds": cu_birds.plan,
    "dtd": dtd.plan,
    "quickdraw": quickdraw.plan,
    "fungi": fungi.plan,
    "vgg_flower": vgg_flower.plan,
    "traffic_sign": traffic_sign.plan,
    "mscoco": mscoco.plan,
    "ilsvrc_2012": ilsvrc.plan_v1,
    "ilsvrc_2012_v2": ilsvrc.plan_v2,
}


@dataclasses.dataclass(frozen=True)
class ConversionReport:
    """The outcome of :func:`convert_source`.

    ``written`` are the class ids written by this call, ``reused`` those found
    complete from an earlier run; ``skipped`` lists ``(image, reason)`` for
    every raw image that could not be read (in all runs); ``unassigned`` the raw
    classes the split file leaves out (not converted).
    """

    source: str
    records_dir: Path
    spec_path: Path
    num_classes: int
    images: int
    written: tuple[int, ...]
    reused: tuple[int, ...]
    skipped: tuple[tuple[str, str], ...]
    unassigned: tuple[str, ...]

    def summary(self) -> str:
        lines = [f"{self.source}: {self.num_classes} classes, {self.images} images in {self.records_dir} "
                 f"({len(self.written)} classes written, {len(self.reused)} already complete)"]
        if self.skipped:
            lines.append(f"{len(self.skipped)} unreadable images skipped:")
            lines += [f"  {image}: {reason}" for image, reason in self.skipped]
        if self.unassigned:
            lines.append(f"{len(self.unassigned)} raw classes are in no split of the split file and were not "
                         f"converted: {', '.join(self.unassigned)}")
        return "\n".join(lines)


def split_file(splits: str | Path | None, source: str) -> Optional[Path]:
    """The split file to use: ``splits`` itself, or ``<splits>/<source>_splits.json`` when ``splits`` is a
    folder (none if that folder has no file for the source: Omniglot and ILSVRC split by their own rules)."""
    if not splits:
        return None
    path = Path(splits)
    if path.is_dir():
        candidate = path / f"{source}_splits.json"
        if not candidate.is_file():
            logger.info("%s: no %s in %s, the source's own split rule applies", source, candidate.name, path)
            return None
        return candidate
    return path


def convert_source(source: str, raw: str | Path, out: str | Path, *, splits: str | Path | None = None,
                   lists: str | Path | None = None, workers: int = 2, seed: int = REFERENCE_SEED,
                   progress: bool = True) -> ConversionReport:
    """Convert ``source`` from its raw download ``raw`` into ``<out>/<source>/``.

    Writes one ``<class_id>.tfrecords`` per class (classes numbered train,
    then valid, then test) and, last, ``dataset_spec.json``. ``splits`` is a
    split file or a folder of ``<source>_splits.json`` (:func:`split_file`);
    without one the reference's seeded rule (``seed``, reference 22) splits
    the classes.
    ``lists`` is a folder with the reference lists (ImageNet duplicates, VGG
    Flower and Traffic Sign label names). Resumable: classes already complete
    in ``<out>/<source>`` are kept; ``workers`` processes convert the others.
    """
    if source not in SOURCES:
        raise ConfigError(f"unknown Meta-Dataset source {source!r}: use one of {', '.join(SOURCES)}")
    raw, out = Path(raw), Path(out)
    plan = SOURCES[source](raw, split_file(splits, source), Path(lists) if lists else None, seed)
    dest = out / source
    dest.mkdir(parents=True, exist_ok=True)
    spec_file = dest / md_records.SPEC_FILE
    spec_file.unlink(missing_ok=True)  # the spec is written last: its presence means the source is complete
    results, written = write_classes(dest, plan.jobs, workers=workers, progress=progress, desc=source)
    counts = [r.records for r in results]
    spec_path = md_records.write_spec(dest, plan.build_spec(counts, str(dest.resolve())))
    skipped = tuple(s for r in results for s in r.skipped)
    for image, reason in skipped:
        logger.warning("%s: skipped unreadable image %s: %s", source, image, reason)
    written_set = set(written)
    return ConversionReport(source, dest, spec_path, len(results), sum(counts), tuple(written),
                            tuple(r.class_id for r in results if r.class_id not in written_set), skipped,
                            plan.unassigned)
