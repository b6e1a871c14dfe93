"""German Traffic Sign Recognition Benchmark (GTSRB): 43 sign classes, all in test.

Raw layout (``GTSRB_Final_Training_Images.zip`` unpacked; ``--raw`` is the ``GTSRB`` folder)::

    <raw>/Final_Training/Images/<NNNNN>/*.ppm      (NNNNN = class number, 5 digits)
    <raw>/Final_Training/Images/<NNNNN>/GT-<NNNNN>.csv   (annotations, not used)

Reference protocol: 0 / 0 / 43 classes, named ``'<NN>.<sign name>'`` (names from
the reference ``TrafficSign_labels.txt``, or from the split file); whole
images, not cropped to their ROI; 39,209 images. The images of a class come
in tracks of 30 frames of one sign, so they are shuffled within the class:
the sorted files are permuted by ``numpy.random.default_rng([seed, class
number])`` (this package's seeded rule; the reference's own shuffle order is
not reproduced).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from data_prep.md_convert.common import Plan, flat_plan, list_dirs, list_files, numbered_splits, require
from data_prep.md_convert.images import FileImage, encode_file
from data_prep.md_convert.splits import ordered
from data_prep.md_convert.writer import ClassJob

NAME = "traffic_sign"
IMAGES = "Final_Training/Images"
LAYOUT = """  <raw>/Final_Training/Images/<NNNNN>/*.ppm   (--raw is the GTSRB folder)
  <raw>/Final_Training/Images/<NNNNN>/GT-<NNNNN>.csv"""
LABELS_FILE = "TrafficSign_labels.txt"


def shuffled(files: list[Path], seed: int, number: int) -> list[Path]:
    """The class's files (sorted by name) in the seeded order that breaks up its tracks."""
    order = np.random.default_rng([seed, number]).permutation(len(files))
    return [files[i] for i in order]


def plan(raw: Path, split_file: Optional[Path], lists: Optional[Path], seed: int) -> Plan:
    require(raw, NAME, LAYOUT, [IMAGES])
    folders = {int(d): raw / IMAGES / d for d in list_dirs(raw / IMAGES) if d.isdigit()}
    names, splits, unassigned = numbered_splits(NAME, list(folders), 2, 0, raw, split_file, lists, LABELS_FILE, seed)
    number_of = {name: number for number, name in names.items()}
    jobs = []
    for class_id, (_, name) in enumerate(ordered(splits)):
        number = number_of[name]
        files = list_files(folders[number], skip=[f"GT-{number:05d}.csv"])
        jobs.append(ClassJob(class_id, name, tuple(FileImage(str(f)) for f in shuffled(files, seed, number)),
                             encode_file))
    return flat_plan(NAME, splits, jobs, unassigned)
