"""QuickDraw: 345 drawing classes of 28x28 bitmaps.

Raw layout (``gs://quickdraw_dataset/full/numpy_bitmap/*.npy``)::

    <raw>/<class name>.npy     uint8 array [num drawings, 784] (or bool)

Reference protocol: one class per file, named by the file stem; split
241 / 52 / 52 (``int(0.7 n)`` / ``int(0.85 n) - int(0.7 n)`` / rest); every
drawing of the file is kept, in file order (no cap: 113,613 to 340,029 per
class, 50,426,266 in all), reshaped to a square grayscale image, converted to
RGB and stored as JPEG. Without a split file, the seeded rule draws from the
sorted class names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from data_prep.md_convert.common import Plan, flat_plan, require
from data_prep.md_convert.images import NpyRows, encode_npy_row
from data_prep.md_convert.splits import ordered, resolve_splits
from data_prep.md_convert.writer import ClassJob
from fewshot_bench.errors import DataError

NAME = "quickdraw"
LAYOUT = "  <raw>/<class name>.npy   (one [N, 784] uint8 array of 28x28 bitmaps per class)"


def plan(raw: Path, split_file: Optional[Path], lists: Optional[Path], seed: int) -> Plan:
    require(raw, NAME, LAYOUT, [])
    files = {p.stem: p for p in sorted(raw.glob("*.npy"))}
    if not files:
        raise DataError(f"{NAME}: {raw} holds no .npy file. Expected:\n{LAYOUT}")
    splits, unassigned = resolve_splits(NAME, sorted(files), raw, split_file, seed)
    jobs = []
    for class_id, (_, name) in enumerate(ordered(splits)):
        try:
            rows = np.load(files[name], mmap_mode="r").shape[0]
        except (OSError, ValueError) as e:
            raise DataError(f"{NAME}: cannot read {files[name]} ({e}); download it again") from e
        path = str(files[name])
        jobs.append(ClassJob(class_id, name, NpyRows(path, rows), encode_npy_row))
    return flat_plan(NAME, splits, jobs, unassigned)
