"""VGG Flowers 102.

Raw layout (``102flowers.tgz`` and ``imagelabels.mat`` in ``--raw``)::

    <raw>/jpg/image_00001.jpg ...
    <raw>/imagelabels.mat       "labels": 1 x N, the label (1..102) of image i + 1

Reference protocol: class ``k`` holds the images labelled ``k``, in file order;
classes are named ``'<k, 3 digits>.<flower name>'`` (names from the reference
``VggFlower_labels.txt``, or from the split file), split 71 / 15 / 16; 8,189
images. Without a split file, the seeded rule draws from the names sorted
(i.e. by label); then ``--lists`` must hold ``VggFlower_labels.txt``.
"""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Optional

from data_prep.md_convert.common import Plan, flat_plan, numbered_splits, require
from data_prep.md_convert.images import FileImage, encode_file
from data_prep.md_convert.splits import ordered
from data_prep.md_convert.writer import ClassJob
from fewshot_bench.errors import DataError

NAME = "vgg_flower"
LAYOUT = """  <raw>/jpg/image_00001.jpg ...
  <raw>/imagelabels.mat   ("labels": the 1-based label of each image)"""
LABELS_FILE = "VggFlower_labels.txt"


def read_labels(path: Path) -> list[int]:
    from scipy.io import loadmat

    try:
        return [int(v) for v in loadmat(str(path))["labels"].ravel()]
    except (OSError, ValueError, KeyError, NotImplementedError) as e:
        raise DataError(f"{NAME}: cannot read the labels of {path} ({e!r}); download imagelabels.mat again") from e


def plan(raw: Path, split_file: Optional[Path], lists: Optional[Path], seed: int) -> Plan:
    require(raw, NAME, LAYOUT, ["jpg", "imagelabels.mat"])
    files = collections.defaultdict(list)
    for index, label in enumerate(read_labels(raw / "imagelabels.mat")):
        files[label].append(str(raw / "jpg" / f"image_{index + 1:05d}.jpg"))
    names, splits, unassigned = numbered_splits(NAME, list(files), 3, 1, raw, split_file, lists, LABELS_FILE, seed)
    label_of = {name: label for label, name in names.items()}
    jobs = [ClassJob(class_id, name, tuple(FileImage(f) for f in files[label_of[name]]), encode_file)
            for class_id, (_, name) in enumerate(ordered(splits))]
    return flat_plan(NAME, splits, jobs, unassigned)
