"""Fungi (FGVCx 2018): 1,394 species.

Raw layout (``fungi_train_val.tgz`` and ``train_val_annotations.tgz`` unpacked in ``--raw``)::

    <raw>/train.json    COCO-style: "images" [{id, file_name}], "annotations" [{image_id, category_id}],
    <raw>/val.json                  "categories" [{id, name}] (ids 0..1393, the same in both files)
    <raw>/images/<species folder>/*.JPG   (the file_name of each image, relative to <raw>)

Reference protocol: the original train and val sets are pooled (their test set
is unlabelled); classes are named ``'<category id, 4 digits>.<name>'`` (some
names repeat), split 994 / 200 / 200; a class's images are in the order of the
pooled image lists (train.json, then val.json); 89,760 images. Without a split
file, the seeded rule draws from the names sorted by category id.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path
from typing import Optional

from data_prep.md_convert.common import Plan, flat_plan, require
from data_prep.md_convert.images import FileImage, encode_file
from data_prep.md_convert.splits import ordered, resolve_splits
from data_prep.md_convert.writer import ClassJob
from fewshot_bench.errors import DataError

NAME = "fungi"
LAYOUT = """  <raw>/train.json, <raw>/val.json   (COCO-style images, annotations, categories)
  <raw>/images/<species folder>/*.JPG (each image's file_name, relative to <raw>)"""
ANNOTATION_FILES = ("train.json", "val.json")


def class_name(category: dict) -> str:
    return f"{int(category['id']):04d}.{category['name']}"


def plan(raw: Path, split_file: Optional[Path], lists: Optional[Path], seed: int) -> Plan:
    require(raw, NAME, LAYOUT, list(ANNOTATION_FILES))
    images, annotations, categories = [], [], {}
    for file_name in ANNOTATION_FILES:
        path = raw / file_name
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            images += data["images"]
            annotations += data["annotations"]
            categories.update({int(c["id"]): c for c in data["categories"]})
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DataError(f"{NAME}: {path} is not a COCO-style annotation file with images, annotations "
                            f"and categories ({e!r}); unpack train_val_annotations.tgz again") from e
    category_of = {a["image_id"]: int(a["category_id"]) for a in annotations}
    files = collections.defaultdict(list)
    for image in images:
        if image["id"] not in category_of:
            raise DataError(f"{NAME}: image {image['file_name']} (id {image['id']}) has no annotation in "
                            f"{', '.join(ANNOTATION_FILES)}")
        files[category_of[image["id"]]].append(str(raw / image["file_name"]))
    names = {class_name(categories[c]): c for c in sorted(categories)}
    splits, unassigned = resolve_splits(NAME, list(names), raw, split_file, seed)
    jobs = [ClassJob(class_id, name, tuple(FileImage(f) for f in files[names[name]]), encode_file)
            for class_id, (_, name) in enumerate(ordered(splits))]
    return flat_plan(NAME, splits, jobs, unassigned)
