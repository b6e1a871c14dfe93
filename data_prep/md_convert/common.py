"""Shared pieces of the source converters: the conversion plan, raw-layout checks, file listings."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

from data_prep import md_records
from data_prep.md_convert.images import FileImage, encode_file
from data_prep.md_convert.splits import ordered, read_split_file, resolve_splits
from data_prep.md_convert.writer import ClassJob
from fewshot_bench.errors import ConfigError, DataError


@dataclasses.dataclass(frozen=True)
class Plan:
    """What converting a source means: its classes (ids 0..n-1 in order) and how to write its spec.

    ``build_spec(counts, path)`` returns the ``dataset_spec.json`` object given
    the record count of every class; ``unassigned`` lists raw classes the split
    file leaves out (not converted).
    """

    jobs: tuple[ClassJob, ...]
    build_spec: Callable[[Sequence[int], str], dict]
    unassigned: tuple[str, ...] = ()


def flat_plan(name: str, splits: Mapping[str, Sequence[str]], jobs: Sequence[ClassJob],
              unassigned: Sequence[str] = ()) -> Plan:
    """A plan whose spec is a flat ``DatasetSpecification`` (``splits`` keyed train/valid/test)."""
    class_names = {split.upper(): list(splits[split]) for split in ("train", "valid", "test")}

    def build_spec(counts: Sequence[int], path: str) -> dict:
        return md_records.dataset_spec(name, class_names, counts, path)

    return Plan(tuple(jobs), build_spec, tuple(unassigned))


def require(raw: Path, source: str, layout: str, paths: Sequence[str]) -> None:
    """Refuse a raw directory that lacks any of ``paths`` (relative to it), naming the expected layout."""
    raw = Path(raw)
    if not raw.is_dir():
        raise DataError(f"{source}: the raw directory {raw} does not exist; pass --raw the folder of the "
                        f"download, laid out as:\n{layout}")
    missing = [p for p in paths if not (raw / p).exists()]
    if missing:
        raise DataError(f"{source}: {raw} is not in the layout of the {source} download: missing "
                        f"{', '.join(missing)}. Expected:\n{layout}")


def list_dirs(path: Path) -> list[str]:
    """Sub-directory names, sorted."""
    return sorted(p.name for p in Path(path).iterdir() if p.is_dir())


def list_files(path: Path, skip: Sequence[str] = ()) -> list[Path]:
    """Entries of a directory other than sub-directories, sorted by name; hidden files (``.DS_Store``,
    DTD's ``.directory``) and names in ``skip`` are left out. Anything else that is not a readable image
    is reported and skipped when the class is written."""
    skip_set = set(skip)
    return sorted(p for p in Path(path).iterdir()
                  if not p.is_dir() and not p.name.startswith(".") and p.name not in skip_set)


def directory_plan(name: str, raw: Path, class_root: Path, split_file: Optional[Path], seed: int) -> Plan:
    """A flat source stored as one folder of images per class (CUB, DTD): classes are the folder names
    (the seeded rule draws from them sorted), images are the folder's files sorted by name."""
    splits, unassigned = resolve_splits(name, list_dirs(class_root), raw, split_file, seed)
    jobs = [ClassJob(class_id, class_name, tuple(FileImage(str(p)) for p in list_files(class_root / class_name)),
                     encode_file) for class_id, (_, class_name) in enumerate(ordered(splits))]
    return flat_plan(name, splits, jobs, unassigned)


def read_label_names(lists: Optional[Path], file_name: str, source: str) -> list[str]:
    """The label names of a reference list file (``lists/<file_name>``; its first line is a comment)."""
    if lists is None:
        raise ConfigError(f"{source}: class names come from the split file or from the reference list "
                          f"{file_name}; pass --splits (e.g. {source}_splits.json) or --lists DIR holding "
                          f"{file_name}")
    path = Path(lists) / file_name
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise ConfigError(f"{source}: cannot read the label list {path} ({e}); pass --lists the folder "
                          f"holding {file_name} (the reference dataset_conversion folder)") from e
    return [line.strip() for line in lines[1:] if line.strip()]


def numbered_classes(numbers: Sequence[int], width: int, split_names: Optional[Sequence[str]],
                     labels: Optional[Sequence[str]], offset: int) -> dict[int, str]:
    """Class names ``'<number, zero-padded to width>.<label>'`` (VGG Flower, Traffic Sign).

    Taken from the split file's names when one is given (their prefix is the
    number), else built from the label list (``labels[number - offset]``); a
    raw class in neither is named by its bare number.
    """
    out = {n: f"{n:0{width}d}.{labels[n - offset]}" if labels is not None and 0 <= n - offset < len(labels)
           else f"{n:0{width}d}" for n in numbers}
    for name in split_names or ():
        prefix = name.split(".", 1)[0]
        if not prefix.isdigit():
            raise ConfigError(f"split file class {name!r} does not start with its number ('NN.name')")
        out[int(prefix)] = name
    return out


def numbered_splits(source: str, numbers: Sequence[int], width: int, offset: int, raw: Path,
                    split_file: Optional[Path], lists: Optional[Path], labels_file: str,
                    seed: int) -> tuple[dict[int, str], dict[str, list[str]], tuple[str, ...]]:
    """Names of numbered raw classes (:func:`numbered_classes`) and their splits (:func:`resolve_splits`).

    The label list is read only when it names the classes: ``lists`` given, or no split file.
    Returns ``(name of each number, class names per split, unassigned raw classes)``.
    """
    split_names = ([n for names in read_split_file(split_file, source).values() for n in names]
                   if split_file is not None else None)
    labels = read_label_names(lists, labels_file, source) if lists is not None or split_file is None else None
    names = numbered_classes(sorted(numbers), width, split_names, labels, offset)
    present = [names[n] for n in sorted(numbers) if n in names]
    splits, unassigned = resolve_splits(source, present, raw, split_file, seed)
    return names, splits, unassigned
