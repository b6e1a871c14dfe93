"""Class splits: the user's split file, or the reference's seeded rule.

A split file is the reference's ``<source>_splits.json``: ``{"train": [...],
"valid": [...], "test": [...]}`` of class names. Class ids follow the file:
train classes in its order, then valid, then test. A split file naming a class
the raw data lacks is refused with the names.

Without a split file the reference rule applies (``gen_rand_split_inds`` of
the Meta-Dataset converters, seed 22): with legacy ``RandomState(seed)``,
``choice(n, n_train + n_valid, replace=False)`` picks the train+valid indices,
the rest (sorted) are test; a second ``choice`` of ``n_train`` among those
gives train (in drawn order), the rest (sorted) valid. Indices point into the
source's candidate list (sorted names for most sources). With the reference
class counts and seed 22 this rebuilds the published split files of aircraft,
cu_birds, dtd, fungi, quickdraw, vgg_flower and mscoco exactly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from fewshot_bench.errors import ConfigError, DataError

SPLITS = ("train", "valid", "test")
REFERENCE_SEED = 22

# Reference (train, valid, test) class counts of sources split by the seeded rule.
REFERENCE_COUNTS = {
    "aircraft": (70, 15, 15),
    "cu_birds": (140, 30, 30),
    "dtd": (33, 7, 7),
    "fungi": (994, 200, 200),
    "quickdraw": (241, 52, 52),
    "vgg_flower": (71, 15, 16),
    "mscoco": (0, 40, 40),
    "traffic_sign": (0, 0, 43),
}


def split_counts(source: str, num_classes: int) -> tuple[int, int, int]:
    """(train, valid, test) class counts for ``num_classes`` classes of ``source``.

    The reference counts when the source has its full class count; otherwise
    the reference proportions: 70% / 15% / 15% as Quickdraw computes them
    (``int(0.7 n)`` train, ``int(0.85 n) - int(0.7 n)`` valid, the rest test),
    MSCOCO 0 / half / rest, Traffic Sign all test.
    """
    reference = REFERENCE_COUNTS.get(source)
    if reference is not None and sum(reference) == num_classes:
        return reference
    if source == "mscoco":
        return 0, num_classes // 2, num_classes - num_classes // 2
    if source == "traffic_sign":
        return 0, 0, num_classes
    train, trainval = int(0.7 * num_classes), int(0.85 * num_classes)
    return train, trainval - train, num_classes - trainval


def seeded_split(candidates: Sequence[str], counts: tuple[int, int, int],
                 seed: int = REFERENCE_SEED) -> dict[str, list[str]]:
    """The reference's random class split (see the module docstring) of ``candidates``."""
    num_train, num_valid, num_test = counts
    n = len(candidates)
    if num_train + num_valid + num_test != n:
        raise ConfigError(f"split counts {counts} do not add up to the {n} classes found")
    rng = np.random.RandomState(seed)
    trainval = rng.choice(n, num_train + num_valid, replace=False)
    test = np.setdiff1d(np.arange(n), trainval)
    train = rng.choice(trainval, num_train, replace=False)
    valid = np.setdiff1d(trainval, train)
    return {name: [candidates[i] for i in indices] for name, indices in
            (("train", train), ("valid", valid), ("test", test))}


def split_file_for(splits: Path, source: str) -> Path:
    """``splits`` itself, or ``<splits>/<source>_splits.json`` when it is a directory."""
    splits = Path(splits)
    return splits / f"{source}_splits.json" if splits.is_dir() else splits


def read_split_file(path: Path, source: str) -> dict[str, list[str]]:
    """The class names per split of a split file, checked for shape and duplicates."""
    path = split_file_for(path, source)
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError as e:
        raise ConfigError(f"split file {path} does not exist: pass --splits a {source}_splits.json "
                          f"(or the folder holding it), or leave --splits out to use the seeded rule") from e
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read split file {path}: {e}") from e
    if not isinstance(data, dict) or set(data) != set(SPLITS) or not all(
            isinstance(v, list) and all(isinstance(n, str) for n in v) for v in data.values()):
        raise ConfigError(f"split file {path} must be a JSON object with exactly the keys train, valid and "
                          f"test, each a list of class names")
    seen: dict[str, str] = {}
    for split in SPLITS:
        for name in data[split]:
            if name in seen:
                raise ConfigError(f"split file {path} lists class {name!r} twice ({seen[name]} and {split})")
            seen[name] = split
    return {split: list(data[split]) for split in SPLITS}


def check_present(splits: Mapping[str, Sequence[str]], available: Sequence[str], source: str,
                  where: Path, origin: str) -> tuple[str, ...]:
    """Refuse classes of ``splits`` that the raw data lacks; return the raw classes left unassigned."""
    available_set = set(available)
    missing = [n for split in SPLITS for n in splits[split] if n not in available_set]
    if missing:
        shown = ", ".join(repr(n) for n in missing[:20]) + (f" and {len(missing) - 20} more" if len(missing) > 20
                                                            else "")
        raise DataError(f"{origin} names {len(missing)} {source} classes absent from the raw data in {where}: "
                        f"{shown}; fix the split file or complete the raw download")
    assigned = {n for split in SPLITS for n in splits[split]}
    return tuple(n for n in available if n not in assigned)


def resolve_splits(source: str, candidates: Sequence[str], raw: Path, split_file: Optional[Path],
                   seed: int) -> tuple[dict[str, list[str]], tuple[str, ...]]:
    """Class names per split (from the split file, else the seeded rule) and the unassigned raw classes."""
    if split_file is not None:
        splits = read_split_file(split_file, source)
        unassigned = check_present(splits, candidates, source, raw, f"split file {split_file_for(split_file, source)}")
        return splits, unassigned
    return seeded_split(candidates, split_counts(source, len(candidates)), seed), ()


def ordered(splits: Mapping[str, Sequence[str]]) -> list[tuple[str, str]]:
    """``(split, class name)`` in class-id order: train, then valid, then test."""
    return [(split, name) for split in SPLITS for name in splits[split]]
