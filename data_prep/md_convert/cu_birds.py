"""CUB-200-2011 birds: 200 species, one folder of images each.

Raw layout (``CUB_200_2011.tgz`` unpacked; ``--raw`` is the ``CUB_200_2011`` folder)::

    <raw>/images/<NNN.Species_name>/*.jpg

Reference protocol: classes are the species folders (``001.Black_footed_Albatross``
...), split 140 / 30 / 30; images sorted by file name, grayscale ones
converted to RGB JPEG, the others kept byte for byte; 11,788 images in all.
Without a split file, the seeded rule draws from the sorted folder names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from data_prep.md_convert.common import Plan, directory_plan, require

NAME = "cu_birds"
LAYOUT = "  <raw>/images/<NNN.Species_name>/*.jpg   (--raw is the CUB_200_2011 folder)"


def plan(raw: Path, split_file: Optional[Path], lists: Optional[Path], seed: int) -> Plan:
    require(raw, NAME, LAYOUT, ["images"])
    return directory_plan(NAME, raw, raw / "images", split_file, seed)
