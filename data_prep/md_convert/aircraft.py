"""FGVC-Aircraft: 100 model variants, every image cropped to its bounding box.

Raw layout (``fgvc-aircraft-2013b``, unpacked; ``--raw`` is the folder holding ``data/``)::

    <raw>/data/images/<image name>.jpg
    <raw>/data/images_box.txt                 "<image name> <xmin> <ymin> <xmax> <ymax>"
    <raw>/data/images_variant_trainval.txt    "<image name> <variant>" (variants may hold spaces)
    <raw>/data/images_variant_test.txt

Reference protocol: the trainval and test images are pooled; classes are the
variants (70 / 15 / 15 split); each class's images are sorted by name; every
image is cropped to its box with PIL ``crop((xmin, ymin, xmax, ymax))`` (this
also removes the 20-pixel copyright banner) and stored as JPEG; 100 images per
class. Without a split file, the seeded rule draws from the sorted variants.
"""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Optional

from data_prep.md_convert.common import Plan, flat_plan, require
from data_prep.md_convert.images import FileImage, encode_file
from data_prep.md_convert.splits import ordered, resolve_splits
from data_prep.md_convert.writer import ClassJob
from fewshot_bench.errors import DataError

NAME = "aircraft"
LAYOUT = """  <raw>/data/images/<image name>.jpg
  <raw>/data/images_box.txt               (<image name> <xmin> <ymin> <xmax> <ymax>)
  <raw>/data/images_variant_trainval.txt  (<image name> <variant>)
  <raw>/data/images_variant_test.txt"""
VARIANT_FILES = ("images_variant_trainval.txt", "images_variant_test.txt")


def _lines(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def read_boxes(path: Path) -> dict[str, tuple[int, int, int, int]]:
    boxes = {}
    for number, line in enumerate(_lines(path), 1):
        fields = line.split()
        if len(fields) != 5:
            raise DataError(f"{path} line {number}: expected '<image name> <xmin> <ymin> <xmax> <ymax>', "
                            f"got {line!r}")
        boxes[fields[0]] = tuple(int(v) for v in fields[1:])
    return boxes


def read_variants(data: Path) -> dict[str, list[str]]:
    """Variant -> its image names (sorted)."""
    images = collections.defaultdict(list)
    for file_name in VARIANT_FILES:
        for line in _lines(data / file_name):
            name, _, variant = line.partition(" ")
            images[variant.strip()].append(name)
    return {variant: sorted(names) for variant, names in images.items()}


def plan(raw: Path, split_file: Optional[Path], lists: Optional[Path], seed: int) -> Plan:
    require(raw, NAME, LAYOUT, ["data/images", "data/images_box.txt"] + [f"data/{f}" for f in VARIANT_FILES])
    data = raw / "data"
    boxes = read_boxes(data / "images_box.txt")
    variants = read_variants(data)
    no_box = [n for names in variants.values() for n in names if n not in boxes]
    if no_box:
        raise DataError(f"{NAME}: {len(no_box)} images have no bounding box in {data / 'images_box.txt'} "
                        f"(first: {no_box[:5]}); restore the file from the download")
    splits, unassigned = resolve_splits(NAME, sorted(variants), raw, split_file, seed)
    jobs = []
    for class_id, (_, variant) in enumerate(ordered(splits)):
        items = tuple(FileImage(str(data / "images" / f"{n}.jpg"), box=boxes[n]) for n in variants[variant])
        jobs.append(ClassJob(class_id, variant, items, encode_file))
    return flat_plan(NAME, splits, jobs, unassigned)
