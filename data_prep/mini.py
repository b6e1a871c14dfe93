"""The built-in offline suite ``mini``: small datasets in the real on-disk formats.

``build_mini(root)`` writes, from package-bundled images only:

- ``<root>/tfds/``: VTAB-style TFDS datasets (``mini_digits``, ``mini_textures``,
  ``mini_histology``, ``mini_dsprites``), read with
  ``tfds.builder(name, data_dir=root / "tfds")`` (importing this module
  registers the builders);
- ``<root>/md/<source>/``: Meta-Dataset sources in the reference layout
  (``dataset_spec.json`` + ``<class_id>.tfrecords``): ``mini_fonts``
  (two-level, Omniglot-like) and ``mini_photos`` (flat);
- ``<root>/MANIFEST.json``: every file with its sha256, the seed and the
  builder version, written last.

The build is a pure function of the seed: rebuilding with the same seed gives
byte-identical files. Command line: ``python -m data_prep.mini [--root DIR] [--seed N] [--force]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import operator
import os
import shutil
import tempfile
import time
from pathlib import Path

from data_prep import md_records, mini_glyphs, mini_images
from data_prep.mini_tfds import BUILDERS, prepare_all
from fewshot_bench.backbones.weights import path_digest
from fewshot_bench.errors import ConfigError, DataError, FewshotBenchError
from fewshot_bench.paths import home

logger = logging.getLogger("data_prep.mini")  # also when run as __main__

BUILDER_VERSION = "1.1.0"
MANIFEST = "MANIFEST.json"
TFDS_DIR = "tfds"
MD_DIR = "md"
_TOP_LEVEL = {TFDS_DIR, MD_DIR, MANIFEST}


@dataclasses.dataclass(frozen=True)
class TfdsDataset:
    """A VTAB-style dataset of the mini suite, as prepared by its TFDS builder."""

    name: str                    # TFDS builder name
    splits: dict[str, int]       # split name -> number of examples
    image_shape: tuple[int, int, int]  # 1 channel: grayscale, the reader tiles it to 3
    pixel_max: int               # 255, or 1 for mini_dsprites (multiply by 255 as VTAB does)


@dataclasses.dataclass(frozen=True)
class VtabTask:
    """A VTAB-style task formed from a mini dataset.

    The label is feature ``label_key`` (``label_classes`` values) binned into
    ``num_classes`` classes as VTAB does: ``floor(label / (label_classes / num_classes))``
    (the identity when both are equal).
    """

    name: str
    dataset: str
    group: str                   # natural / specialized / structured
    label_key: str
    label_classes: int
    num_classes: int


@dataclasses.dataclass(frozen=True)
class MdSource:
    """A Meta-Dataset-style source under ``<root>/md/<name>``."""

    name: str
    spec_class: str              # DatasetSpecification or BiLevelDatasetSpecification
    image_side: int
    images_per_class: int


TFDS_DATASETS: dict[str, TfdsDataset] = {
    b.name: TfdsDataset(b.name, dict(b.SPLIT_SIZES), (b.SIDE, b.SIDE, b.CHANNELS), b.PIXEL_MAX)
    for b in BUILDERS
}

_TEXTURES = len(mini_images.TEXTURES)
VTAB_TASKS: tuple[VtabTask, ...] = (
    VtabTask("mini_digits", "mini_digits", "natural", "label", 10, 10),
    VtabTask("mini_textures", "mini_textures", "natural", "label", _TEXTURES, _TEXTURES),
    VtabTask("mini_histology", "mini_histology", "specialized", "label", 2, 2),
    # VTAB's dsprites tasks: x position 32 -> 16 bins, orientation 40 -> 16 bins.
    VtabTask("mini_dsprites_location", "mini_dsprites", "structured", "label_x_position", 32, 16),
    VtabTask("mini_dsprites_orientation", "mini_dsprites", "structured", "label_orientation", 40, 16),
)

FONTS_SIDE, FONTS_IMAGES = 28, 20
PHOTOS_SIDE, PHOTOS_IMAGES = 32, 24
PHOTOS_SPLIT = {"VALID": 5, "TEST": 8}  # the remaining photos are TRAIN classes

MD_SOURCES: dict[str, MdSource] = {
    "mini_fonts": MdSource("mini_fonts", "BiLevelDatasetSpecification", FONTS_SIDE, FONTS_IMAGES),
    "mini_photos": MdSource("mini_photos", "DatasetSpecification", PHOTOS_SIDE, PHOTOS_IMAGES),
}


def default_mini_root() -> Path:
    """``$FEWSHOT_BENCH_HOME/mini`` if that variable is set, else ``~/.cache/fewshot_bench/mini``."""
    return home() / "mini"


def _rebuild_hint(root: Path, seed: int) -> str:
    return f"rebuild with `python -m data_prep.mini --root {root} --seed {seed} --force`"


# ---------------------------------------------------------------- writers

def _build_fonts(source_dir: Path, seed: int) -> None:
    superclasses: dict[str, list[tuple[str, list[str]]]] = {}
    counts: list[int] = []
    class_id = 0
    for split in md_records.SPLITS:
        superclasses[split] = []
        for script in mini_glyphs.SCRIPTS[split]:
            fonts = mini_glyphs.fonts_for(script.chars)
            superclasses[split].append(
                (script.name, [f"{script.name}-U+{ord(c):04X}" for c in script.chars]))
            for char in script.chars:
                rng = mini_images.rng_for(seed, "mini_fonts", class_id)
                images = (mini_glyphs.render(char, fonts[int(rng.integers(len(fonts)))], rng, FONTS_SIDE)
                          for _ in range(FONTS_IMAGES))
                counts.append(md_records.write_class(source_dir, class_id, images))
                class_id += 1
    md_records.write_spec(source_dir, md_records.bilevel_dataset_spec("mini_fonts", superclasses, counts))


def _photo_split(seed: int) -> dict[str, list[str]]:
    """Photos (classes) per split: a seeded permutation, like MD's random class splits."""
    order = mini_images.rng_for(seed, "mini_photos", "split").permutation(len(mini_images.PHOTO_CLASSES))
    names = [mini_images.PHOTO_CLASSES[i] for i in order]
    n_valid, n_test = PHOTOS_SPLIT["VALID"], PHOTOS_SPLIT["TEST"]
    n_train = len(names) - n_valid - n_test
    return {"TRAIN": names[:n_train], "VALID": names[n_train:n_train + n_valid],
            "TEST": names[n_train + n_valid:]}


def _build_photos(source_dir: Path, seed: int) -> None:
    split = _photo_split(seed)
    counts = []
    names = [name for s in md_records.SPLITS for name in split[s]]
    for class_id, name in enumerate(names):
        images = mini_images.photo_crops(seed, name, PHOTOS_IMAGES, PHOTOS_SIDE)
        counts.append(md_records.write_class(source_dir, class_id, images))
    md_records.write_spec(source_dir, md_records.dataset_spec("mini_photos", split, counts))


def _data_files(root: Path) -> list[str]:
    """Every file under ``root`` except the manifest, as sorted POSIX paths relative to ``root``."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.is_file() and p != root / MANIFEST)


# The packages whose code or bundled data decide the bytes of a build: the same
# seed gives the same bytes with the same versions (recorded in the manifest).
_PACKAGES = ("numpy", "pillow", "scikit-image", "scikit-learn", "matplotlib", "tensorflow",
             "tensorflow-datasets")


def _package_versions() -> dict[str, str]:
    from importlib import metadata
    versions = {}
    for package in _PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def _write_manifest(root: Path, seed: int) -> None:
    files = {rel: path_digest(root / rel) for rel in _data_files(root)}
    manifest = {"builder_version": BUILDER_VERSION, "seed": seed, "packages": _package_versions(),
                "files": files}
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def read_manifest(root: str | Path) -> dict | None:
    """The manifest of a mini build, or None when it is missing or unreadable."""
    try:
        manifest = json.loads((Path(root) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


# ---------------------------------------------------------------- public API

def _replaceable(root: Path) -> bool:
    """Only an empty directory or one holding a mini build may be replaced."""
    return not root.exists() or (root.is_dir() and set(os.listdir(root)) <= _TOP_LEVEL)


def build_mini(root: str | Path, seed: int = 0, force: bool = False) -> Path:
    """Build the mini suite into ``root`` and return ``root``.

    An intact build with the same seed and builder version is kept unless
    ``force``; a different or damaged one is an error unless ``force``. The
    build goes to a temporary directory next to ``root`` and is renamed into
    place, so ``root`` never holds a half-written suite.
    """
    root = Path(root).expanduser().absolute()
    seed = _check_seed(seed)
    if root.exists() and not root.is_dir():
        raise DataError(f"{root} is a file, not a directory: choose another root for the mini suite")
    if root.exists() and any(root.iterdir()):
        manifest = read_manifest(root)
        same = manifest is not None and manifest.get("seed") == seed \
            and manifest.get("builder_version") == BUILDER_VERSION
        if not force:
            if same:
                problems = verify_mini(root)
                if not problems:
                    return root
                holds = f"a damaged mini build ({problems[0]})"
            elif manifest is None:
                holds = f"no mini build ({root / MANIFEST} is missing or unreadable)"
            else:
                holds = (f"the mini build with seed {manifest.get('seed')}, "
                         f"builder version {manifest.get('builder_version')}")
            raise DataError(f"{root} holds {holds}; {_rebuild_hint(root, seed)} "
                            f"or call ensure_mini({str(root)!r}, seed={seed})")
        if not _replaceable(root):
            raise DataError(f"{root} is not empty and does not look like a mini build "
                            f"(expected only {sorted(_TOP_LEVEL)}); refusing to replace it: "
                            f"choose another --root or empty that directory")
    root.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.building-", dir=root.parent))
    scratch = Path(tempfile.mkdtemp(prefix=f".{root.name}.scratch-", dir=root.parent))
    try:
        prepare_all(staging / TFDS_DIR, scratch, seed)
        for name, build in (("mini_fonts", _build_fonts), ("mini_photos", _build_photos)):
            source_dir = staging / MD_DIR / name
            source_dir.mkdir(parents=True)
            build(source_dir, seed)
        _write_manifest(staging, seed)
        _swap_into_place(staging, root, seed)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("built the mini suite (seed %d) into %s in %.1f s", seed, root, time.perf_counter() - start)
    return root


def _check_seed(seed: object) -> int:
    try:
        value = operator.index(seed)  # type: ignore[arg-type]
    except TypeError:
        value = -1
    if value < 0 or isinstance(seed, bool):
        raise ConfigError(f"mini suite: seed must be a non-negative integer, got {seed!r}")
    return value


def _swap_into_place(staging: Path, root: Path, seed: int) -> None:
    """Rename ``staging`` to ``root``, retiring an old build first.

    If another process puts an intact build at ``root`` in between (two
    ``ensure_mini`` calls racing), that build is kept and ours discarded.
    """
    retired = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
    try:
        if root.exists():
            os.replace(root, retired / root.name)
        os.replace(staging, root)
    except OSError as e:
        if not verify_mini(root):
            return
        raise DataError(f"could not move the new mini build into {root}: {e}; "
                        f"{_rebuild_hint(root, seed)}") from e
    finally:
        shutil.rmtree(retired, ignore_errors=True)


def verify_mini(root: str | Path) -> list[str]:
    """The problems of the mini build in ``root`` (missing or changed files); empty if intact."""
    root = Path(root)
    manifest = read_manifest(root)
    if manifest is None:
        return [f"{root / MANIFEST} is missing or unreadable"]
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        return [f"{root / MANIFEST} lists no files"]
    problems = []
    for rel, digest in sorted(files.items()):
        path = root / rel
        if not path.is_file():
            problems.append(f"{path} is missing")
        elif path_digest(path) != digest:
            problems.append(f"{path} is changed (sha256 differs from {root / MANIFEST})")
    return problems


def ensure_mini(root: str | Path | None = None, seed: int = 0) -> Path:
    """Return a verified mini build in ``root`` (default: default_mini_root()), building or repairing it."""
    root = Path(root).expanduser().absolute() if root is not None else default_mini_root()
    seed = _check_seed(seed)
    if not root.exists() or (root.is_dir() and not any(root.iterdir())):
        return build_mini(root, seed)
    manifest = read_manifest(root)
    if manifest is not None and (manifest.get("seed"), manifest.get("builder_version")) != (seed, BUILDER_VERSION):
        logger.warning("%s holds the mini suite with seed %s, version %s; rebuilding with seed %d, version %s",
                       root, manifest.get("seed"), manifest.get("builder_version"), seed, BUILDER_VERSION)
        return build_mini(root, seed, force=True)
    problems = verify_mini(root)
    if problems:
        for problem in problems:
            logger.warning("mini suite damaged: %s", problem)
        logger.warning("rebuilding the mini suite in %s (seed %d)", root, seed)
        return build_mini(root, seed, force=True)
    return root


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build the offline mini suite of fewshot_bench.")
    parser.add_argument("--root", type=Path, default=None, help=f"default: {default_mini_root()}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="rebuild even if an intact build exists")
    args = parser.parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    package_logger = logging.getLogger("data_prep")
    package_logger.addHandler(handler)
    package_logger.setLevel(logging.INFO)
    package_logger.propagate = False
    root = args.root if args.root is not None else default_mini_root()
    start = time.perf_counter()
    try:
        built = build_mini(root, args.seed, args.force) if args.force else ensure_mini(root, args.seed)
    except FewshotBenchError as e:
        raise SystemExit(f"error: {e}") from e
    size = sum(p.stat().st_size for p in built.rglob("*") if p.is_file())
    print(f"mini suite (seed {args.seed}) in {built}: {size / 1e6:.2f} MB, {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
