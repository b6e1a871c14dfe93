"""MSCOCO 2017: 80 object categories, one record per annotated object.

Raw layout (``train2017.zip`` and ``annotations_trainval2017.zip`` unpacked in ``--raw``)::

    <raw>/train2017/<image id, 12 digits>.jpg
    <raw>/annotations/instances_train2017.json   (or <raw>/instances_train2017.json)

Reference protocol: every instance annotation of train2017 (crowd ones too)
becomes a crop of its image: the box is enlarged 1.2 times about its centre,
rounded to pixels and clipped to the image (:func:`images.coco_crop_box`),
then stored as RGB JPEG; a class's crops are in annotation-file order;
classes are the category names, split 0 / 40 / 40; 860,001 crops. Crops that
come out empty or images that do not decode are skipped and reported.
Without a split file, the seeded rule draws from the categories in the order
of the annotation file.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path
from typing import Optional

from data_prep.md_convert.common import Plan, flat_plan, require
from data_prep.md_convert.images import CocoCrop, encode_coco_crop
from data_prep.md_convert.splits import ordered, resolve_splits
from data_prep.md_convert.writer import ClassJob
from fewshot_bench.errors import DataError

NAME = "mscoco"
BOX_SCALE = 1.2
ANNOTATIONS = "instances_train2017.json"
LAYOUT = """  <raw>/train2017/<image id, 12 digits>.jpg
  <raw>/annotations/instances_train2017.json  (or <raw>/instances_train2017.json)"""


def annotation_file(raw: Path) -> Path:
    for candidate in (raw / "annotations" / ANNOTATIONS, raw / ANNOTATIONS):
        if candidate.is_file():
            return candidate
    raise DataError(f"{NAME}: {raw} is not in the layout of the MSCOCO download: missing "
                    f"annotations/{ANNOTATIONS}. Expected:\n{LAYOUT}")


def plan(raw: Path, split_file: Optional[Path], lists: Optional[Path], seed: int) -> Plan:
    require(raw, NAME, LAYOUT, ["train2017"])
    path = annotation_file(raw)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        categories = [(int(c["id"]), c["name"]) for c in data["categories"]]
        crops = collections.defaultdict(list)
        for a in data["annotations"]:
            image = str(raw / "train2017" / f"{int(a['image_id']):012d}.jpg")
            crops[int(a["category_id"])].append(CocoCrop(image, tuple(float(v) for v in a["bbox"]), BOX_SCALE))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"{NAME}: {path} is not a COCO instances file ({e!r}); unpack the annotations again") from e
    category_of = {name: cid for cid, name in categories}
    splits, unassigned = resolve_splits(NAME, [name for _, name in categories], raw, split_file, seed)
    jobs = [ClassJob(class_id, name, tuple(crops[category_of[name]]), encode_coco_crop)
            for class_id, (_, name) in enumerate(ordered(splits))]
    return flat_plan(NAME, splits, jobs, unassigned)
