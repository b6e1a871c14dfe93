"""Omniglot: alphabets are superclasses, characters are classes (``BiLevelDatasetSpecification``).

Raw layout (the two zips of github.com/brendenlake/omniglot, unzipped in ``--raw``)::

    <raw>/images_background/<alphabet>/<character>/*.png   (30 alphabets)
    <raw>/images_evaluation/<alphabet>/<character>/*.png   (20 alphabets)

Reference protocol: the background set gives train and valid, the evaluation
set gives test; the valid alphabets are the 5 smallest background alphabets
(Blackfoot, Ojibwe, Inuktitut, Tagalog, Alphabet_of_the_Magi), in that order;
train alphabets (the other background ones) and test alphabets are sorted by
name. Characters are sorted within an alphabet and named
``<alphabet>-<character>``; images are sorted by file name, inverted, and
stored as RGB JPEG. The reference has 25 / 5 / 20 alphabets, 1623 characters,
20 images each. A split file, if given, lists alphabets per split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from data_prep import md_records
from data_prep.md_convert.common import Plan, list_dirs, list_files, require
from data_prep.md_convert.images import FileImage, encode_file
from data_prep.md_convert.splits import SPLITS, check_present, read_split_file
from data_prep.md_convert.writer import ClassJob

NAME = "omniglot"
BACKGROUND, EVALUATION = "images_background", "images_evaluation"
LAYOUT = """  <raw>/images_background/<alphabet>/<character>/*.png
  <raw>/images_evaluation/<alphabet>/<character>/*.png"""
VALID_ALPHABETS = ("Blackfoot_(Canadian_Aboriginal_Syllabics)", "Ojibwe_(Canadian_Aboriginal_Syllabics)",
                   "Inuktitut_(Canadian_Aboriginal_Syllabics)", "Tagalog", "Alphabet_of_the_Magi")


def alphabet_splits(background: list[str], evaluation: list[str]) -> dict[str, list[str]]:
    """The reference rule: valid = the 5 named background alphabets (those present), train = the other
    background alphabets sorted, test = the evaluation alphabets sorted."""
    valid = [a for a in VALID_ALPHABETS if a in background]
    return {"train": sorted(a for a in background if a not in VALID_ALPHABETS), "valid": valid,
            "test": sorted(evaluation)}


def plan(raw: Path, split_file: Optional[Path], lists: Optional[Path], seed: int) -> Plan:
    require(raw, NAME, LAYOUT, [BACKGROUND, EVALUATION])
    home = {a: raw / BACKGROUND / a for a in list_dirs(raw / BACKGROUND)}
    home.update({a: raw / EVALUATION / a for a in list_dirs(raw / EVALUATION)})
    unassigned: tuple[str, ...] = ()
    if split_file is not None:
        splits = read_split_file(split_file, NAME)
        unassigned = check_present(splits, list(home), NAME, raw, f"split file {split_file}")
    else:
        splits = alphabet_splits(list_dirs(raw / BACKGROUND), list_dirs(raw / EVALUATION))
    jobs, superclasses = [], {}
    for split in SPLITS:
        superclasses[split.upper()] = []
        for alphabet in splits[split]:
            names = []
            for character in list_dirs(home[alphabet]):
                name = f"{alphabet}-{character}"
                items = tuple(FileImage(str(p), invert=True) for p in list_files(home[alphabet] / character))
                jobs.append(ClassJob(len(jobs), name, items, encode_file))
                names.append(name)
            superclasses[split.upper()].append((alphabet, names))

    def build_spec(counts, path):
        return md_records.bilevel_dataset_spec(NAME, superclasses, counts, path)

    return Plan(tuple(jobs), build_spec, unassigned)
