"""Describable Textures (DTD): 47 textures, 120 images each.

Raw layout (``dtd-r1.0.1.tar.gz`` unpacked; ``--raw`` is the ``dtd`` folder)::

    <raw>/images/<texture>/*.jpg

Reference protocol: classes are the texture folders, split 33 / 7 / 7; images
sorted by file name (the stray ``waffled/.directory`` file, like every hidden
file, is left out); 5,640 images. Without a split file, the seeded rule draws
from the sorted folder names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from data_prep.md_convert.common import Plan, directory_plan, require

NAME = "dtd"
LAYOUT = "  <raw>/images/<texture>/*.jpg   (--raw is the dtd folder)"


def plan(raw: Path, split_file: Optional[Path], lists: Optional[Path], seed: int) -> Plan:
    require(raw, NAME, LAYOUT, ["images"])
    return directory_plan(NAME, raw, raw / "images", split_file, seed)
