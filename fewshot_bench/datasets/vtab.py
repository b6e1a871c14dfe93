"""VTAB tasks over TFDS builders (Zhai et al. 2019; VTAB+MD, Dumoulin et al. 2021).

A VTAB task is one :class:`~fewshot_bench.tasks.Task`:

- support = ``train800val200``: the ``train800`` slice then the ``val200``
  slice, loaded into memory;
- validation = ``ValidationSplit(train=train800, val=val200)``, two views of
  the support set, so hyper-parameter selection never sees the test split;
- query = the ``test`` split streamed with ``tf.data`` in batches;
- info = ``TaskInfo(name, "vtab", original_area)``, the original area being the
  median height x width of the support images as decoded, before the resize.

Slices are fixed TFDS split strings ("train[:800]"), never random samples, so
a task is the same on every machine. This module reads any TFDS builder that
a :class:`VtabTaskSpec` names (the mini suite reuses it for its own builders).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import gin
import numpy as np

from fewshot_bench.datasets import vtab_labels as labels
from fewshot_bench.errors import ConfigError, DataError
from fewshot_bench.registry import Registry
from fewshot_bench.tasks import (POOLED, Examples, QueryStream, Suite, Task, TaskInfo, TaskSource, ValidationSplit,
                                 median_area)

SUPPORT_BATCH_SIZE = 256


@dataclasses.dataclass(frozen=True)
class VtabTaskSpec:
    """One VTAB task: a TFDS builder, its split table and its label rule.

    ``label_fn`` maps a decoded TFDS example (dict of tensors) to an integer
    label with TF graph ops; ``None`` reads ``example["label"]``.
    ``image_max_value`` is the largest stored pixel value (255; 1 for
    dSprites, whose images are binary masks).
    """

    name: str
    group: str
    tfds_name: str
    num_classes: int
    train800: str
    val200: str
    test: str
    label_fn: Optional[Callable[[dict], Any]] = None
    image_key: str = "image"
    image_max_value: float = 255.0

    @property
    def dataset(self) -> str:
        """The builder name without version, e.g. ``"eurosat/rgb"``."""
        return split_tfds_name(self.tfds_name)[0]


# ---------------------------------------------------------------------------
# Pure rules: builder names, versions and split slices.

_VERSION_RE = re.compile(r"^\d+\.\d+\.\d+$")
_SLICE_RE = re.compile(r"^(?P<name>[\w-]+)(\[(?P<start>-?\d+%?)?:(?P<stop>-?\d+%?)?\])?$")


def split_tfds_name(tfds_name: str) -> tuple[str, Optional[str]]:
    """``"eurosat/rgb:2.*.*"`` -> ``("eurosat/rgb", "2.*.*")``; no version -> ``None``."""
    dataset, _, version = tfds_name.partition(":")
    return dataset, (version or None)


def version_matches(version: str, pattern: Optional[str]) -> bool:
    """TFDS version rule: ``"3.1.0"`` matches ``"3.*.*"`` and ``"3.1.0"``; ``None`` matches all."""
    if pattern is None:
        return True
    return all(p in ("*", v) for v, p in zip(version.split("."), pattern.split(".")))


def prepared_versions(data_dir: Path, dataset: str) -> list[str]:
    """Versions of ``dataset`` prepared in ``data_dir`` (folders holding a ``dataset_info.json``)."""
    folder = Path(data_dir) / dataset
    if not folder.is_dir():
        return []
    found = [d.name for d in folder.iterdir()
             if _VERSION_RE.match(d.name) and (d / "dataset_info.json").is_file()]
    return sorted(found, key=lambda v: tuple(int(x) for x in v.split(".")))


def slice_range(split: str, num_examples: Optional[int]) -> tuple[str, Optional[int], Optional[int]]:
    """``(split_name, start, stop)`` of a TFDS split string such as ``"train[63000:63200]"``.

    Follows TFDS' slicing: absolute or percent bounds, negative bounds count
    from the end, percents round to the closest example. ``start``/``stop``
    are ``None`` where they depend on an unknown ``num_examples``.
    """
    match = _SLICE_RE.match(split.replace(" ", ""))
    if not match:
        raise ConfigError(f"cannot parse split {split!r}: expected name or name[start:stop] "
                          f"(e.g. 'train[:800]', 'test[50%:]')")

    def bound(text: Optional[str], default: Optional[int]) -> Optional[int]:
        if text is None:
            return default
        if text.endswith("%"):
            value = None if num_examples is None else int(round(int(text[:-1]) * num_examples / 100.0))
        else:
            value = int(text)
        if value is not None and value < 0:
            value = None if num_examples is None else num_examples + value
        if value is not None and num_examples is not None:
            value = min(max(value, 0), num_examples)
        return value

    return match["name"], bound(match["start"], 0), bound(match["stop"], num_examples)


def slice_size(split: str, num_examples: int) -> int:
    """Number of examples a split string selects from a split of ``num_examples``."""
    _, start, stop = slice_range(split, num_examples)
    return max(0, stop - start)


def overlapping_slices(spec: VtabTaskSpec, sizes: dict[str, int]) -> list[tuple[str, str]]:
    """Pairs of roles among train800, val200 and test whose slices share examples.

    VTAB rule: the three slices are disjoint, so the test split never reaches
    the support set. Slices whose bounds depend on an unknown size are skipped.
    """
    roles = {"train800": spec.train800, "val200": spec.val200, "test": spec.test}
    ranges = {role: slice_range(split, sizes.get(name_of(split))) for role, split in roles.items()}
    pairs = []
    for i, a in enumerate(roles):
        for b in list(roles)[i + 1:]:
            (name_a, start_a, stop_a), (name_b, start_b, stop_b) = ranges[a], ranges[b]
            known = None not in (start_a, stop_a, start_b, stop_b)
            if name_a == name_b and known and max(start_a, start_b) < min(stop_a, stop_b):
                pairs.append((a, b))
    return pairs


# ---------------------------------------------------------------------------
# Opening builders.

def resolve_data_dir(data_dir: str | Path | None) -> Path:
    """``data_dir``, or TFDS' default (``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``)."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    import tensorflow_datasets as tfds

    return Path(tfds.core.constants.get_default_data_dir())


def prepare_command(suite: str, data_dir: Path) -> str:
    """The command that prepares the data of ``suite`` (``vtab-1k``/``vtab-v2`` -> ``vtab``)."""
    benchmark = "vtab" if suite.startswith("vtab") else suite
    return f"fewshot-bench prepare {benchmark} --data_dir {data_dir}"


def check_prepared(spec: VtabTaskSpec, data_dir: Path, suite: str = "vtab-1k") -> str:
    """The prepared version of ``spec``'s dataset; :class:`DataError` if missing or mismatched."""
    dataset, pattern = split_tfds_name(spec.tfds_name)
    found = prepared_versions(data_dir, dataset)
    if not found:
        raise DataError(f"task {spec.name!r}: dataset {dataset!r} is not prepared in data_dir {data_dir} "
                        f"(no {data_dir / dataset}/<version>/dataset_info.json). "
                        f"Prepare it with: {prepare_command(suite, data_dir)}")
    matching = [v for v in found if version_matches(v, pattern)]
    if not matching:
        raise DataError(f"task {spec.name!r}: dataset {dataset!r} in data_dir {data_dir} has version(s) "
                        f"{', '.join(found)} but the task expects version {pattern}. Prepare version "
                        f"{pattern} with: {prepare_command(suite, data_dir)}")
    return matching[-1]


def open_builder(spec: VtabTaskSpec, data_dir: str | Path | None, suite: str = "vtab-1k") -> Any:
    """The TFDS builder of ``spec`` in ``data_dir``, after checking that it is prepared."""
    import tensorflow_datasets as tfds

    root = resolve_data_dir(data_dir)
    check_prepared(spec, root, suite)
    try:
        return tfds.builder(spec.tfds_name, data_dir=str(root))
    except Exception as e:  # TFDS raises several unrelated types here
        raise DataError(f"task {spec.name!r}: cannot open TFDS builder {spec.tfds_name!r} in data_dir "
                        f"{root}: {e}. Re-prepare it with: {prepare_command(suite, root)}") from e


def split_sizes(builder: Any) -> dict[str, int]:
    """``{split name: number of examples}`` as recorded by TFDS (empty when unknown)."""
    return {name: int(info.num_examples) for name, info in builder.info.splits.items()}


# ---------------------------------------------------------------------------
# Reading.

def _example_ids(spec: VtabTaskSpec, split: str, sizes: dict[str, int]) -> Callable[[int], str]:
    """Stable ids ``"<dataset>/<split name>/<index in split>"`` for the examples of a slice.

    Falls back to ``"<dataset>/<split string>/<index in slice>"`` when the
    split's size is unknown and the slice start depends on it.
    """
    name, start, _ = slice_range(split, sizes.get(name_of(split)))
    if start is None:
        return lambda i: f"{spec.dataset}/{split}/{i}"
    return lambda i: f"{spec.dataset}/{name}/{start + i}"


def name_of(split: str) -> str:
    """The split name of a split string: ``"train[:800]"`` -> ``"train"``."""
    return split.split("[", 1)[0].strip()


def read_sized(builder: Any, spec: VtabTaskSpec, split: str, image_size: int,
               batch_size: int) -> Iterator[tuple[Examples, np.ndarray]]:
    """Stream ``split`` of ``builder`` as preprocessed, labelled :class:`Examples` batches.

    Each batch comes with the ``[n, 2]`` heights and widths of its images as
    decoded, before the resize (read off the same decode).
    """
    import tensorflow as tf

    from fewshot_bench.datasets.preprocess import to_unit_rgb

    def convert(example):
        label = spec.label_fn(example) if spec.label_fn is not None else example["label"]
        raw = example[spec.image_key]
        image = to_unit_rgb(raw, image_size, spec.image_max_value)
        return image, tf.cast(label, tf.int64), tf.shape(raw)[:2]

    try:
        ds = builder.as_dataset(split=split, shuffle_files=False)
    except Exception as e:  # unknown split, slice out of range, missing files
        raise DataError(f"task {spec.name!r}: cannot read split {split!r} of {spec.tfds_name!r}: {e}") from e
    ds = ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(batch_size).prefetch(1)
    example_id = _example_ids(spec, split, split_sizes(builder))
    offset = 0
    for images, batch_labels, sizes in ds.as_numpy_iterator():
        bad = (batch_labels < 0) | (batch_labels >= spec.num_classes)
        if bad.any():
            raise DataError(f"task {spec.name!r}: split {split!r} of {spec.tfds_name!r} gives label "
                            f"{int(batch_labels[bad][0])}, outside 0..{spec.num_classes - 1}; check the "
                            f"task's label rule and the prepared data")
        ids = tuple(example_id(offset + i) for i in range(len(batch_labels)))
        offset += len(batch_labels)
        yield Examples(images, batch_labels, ids), sizes


def read_split(builder: Any, spec: VtabTaskSpec, split: str, image_size: int,
               batch_size: int) -> Iterator[Examples]:
    """Stream ``split`` of ``builder`` as preprocessed, labelled :class:`Examples` batches."""
    return (examples for examples, _ in read_sized(builder, spec, split, image_size, batch_size))


def _load(builder: Any, spec: VtabTaskSpec, split: str, image_size: int) -> tuple[Examples, np.ndarray]:
    """``split`` in memory, with the ``[n, 2]`` heights and widths of its images before the resize."""
    parts = list(read_sized(builder, spec, split, image_size, SUPPORT_BATCH_SIZE))
    if not parts:
        raise DataError(f"task {spec.name!r}: split {split!r} of {spec.tfds_name!r} is empty")
    return Examples.concat([examples for examples, _ in parts]), np.concatenate([sizes for _, sizes in parts])


def vtab_task(spec: VtabTaskSpec, *, data_dir: str | Path | None, image_size: int, seed: int = 0,
              suite: str = "vtab-1k", query_batch_size: int = 500) -> Task:
    """Build the Task of ``spec``: support ``train800val200``, query the streamed ``test`` split."""
    if query_batch_size < 1:
        raise ConfigError(f"query_batch_size must be a positive integer, got {query_batch_size}")
    builder = open_builder(spec, data_dir, suite)
    sizes = split_sizes(builder)
    overlaps = overlapping_slices(spec, sizes)
    if overlaps:
        a, b = overlaps[0]
        raise ConfigError(f"task {spec.name!r}: its {a} and {b} slices overlap in {spec.tfds_name} "
                          f"(train800={spec.train800!r}, val200={spec.val200!r}, test={spec.test!r}); "
                          f"the three slices must be disjoint")
    train800, train_sizes = _load(builder, spec, spec.train800, image_size)
    val200, val_sizes = _load(builder, spec, spec.val200, image_size)
    support = Examples.concat([train800, val200])
    n = len(train800)
    del train800, val200
    # train800 -> val200 as views of the support arrays (no second copy of the images)
    validation = ValidationSplit(train=Examples(support.images[:n], support.labels[:n], support.ids[:n]),
                                 val=Examples(support.images[n:], support.labels[n:], support.ids[n:]))
    test_size = slice_size(spec.test, sizes[name_of(spec.test)]) if name_of(spec.test) in sizes else None
    query = QueryStream(lambda: read_split(builder, spec, spec.test, image_size, query_batch_size),
                        size=test_size)
    return Task(
        support=support,
        query=query,
        num_classes=spec.num_classes,
        suite=suite,
        group=spec.group,
        source=spec.name,
        task_id=spec.name,
        seed=seed,
        validation=validation,
        info=TaskInfo(spec.name, "vtab", median_area(np.concatenate([train_sizes, val_sizes]))),
    )


def vtab_source(spec: VtabTaskSpec, *, data_dir: str | Path | None, suite: str = "vtab-1k",
                query_batch_size: int = 500) -> TaskSource:
    """The one-task :class:`TaskSource` of ``spec`` (scored by pooled accuracy)."""

    def build(index: int, seed: int, image_size: int) -> Task:
        if index != 0:
            raise ConfigError(f"VTAB task {spec.name!r} has exactly one task (index 0), not index {index}")
        return vtab_task(spec, data_dir=data_dir, image_size=image_size, seed=seed, suite=suite,
                         query_batch_size=query_batch_size)

    return TaskSource(name=spec.name, group=spec.group, scoring=POOLED, num_tasks=1, build=build,
                      benchmark="vtab")


# ---------------------------------------------------------------------------
# The VTAB-1k tasks: split tables and label rules (Zhai et al. 2019; the
# numbers follow google-research/task_adaptation). Names with arguments
# resolve through VTAB_TASKS, e.g. VTAB_TASKS.create("clevr(task='count_all')").

NATURAL, SPECIALIZED, STRUCTURED = "natural", "specialized", "structured"
TRAIN800 = "train[:800]"

VTAB_TASKS: Registry[VtabTaskSpec] = Registry("VTAB task")


def _spec(name: str, group: str, tfds_name: str, num_classes: int, val200: str, test: str,
          **options: Any) -> VtabTaskSpec:
    return VtabTaskSpec(name, group, tfds_name, num_classes, TRAIN800, val200, test, **options)


def _choice(task: str, option: str, value: Any, valid: Any) -> None:
    if value not in valid:
        raise ConfigError(f"VTAB task {task!r}: {option}={value!r} is not supported; "
                          f"choose one of {sorted(valid)}")


@VTAB_TASKS.register("caltech101")
def caltech101() -> VtabTaskSpec:
    return _spec("caltech101", NATURAL, "caltech101:3.*.*", 102, "train[2754:2954]", "test")


@VTAB_TASKS.register("cifar")
def cifar(num_classes: int = 100) -> VtabTaskSpec:
    _choice("cifar", "num_classes", num_classes, (10, 100))
    return _spec(f"cifar(num_classes={num_classes})", NATURAL, f"cifar{num_classes}:3.*.*", num_classes,
                 "train[45000:45200]", "test")


@VTAB_TASKS.register("dtd")
def dtd() -> VtabTaskSpec:
    return _spec("dtd", NATURAL, "dtd:3.*.*", 47, "validation[:200]", "test")


@VTAB_TASKS.register("oxford_flowers102")
def oxford_flowers102() -> VtabTaskSpec:
    return _spec("oxford_flowers102", NATURAL, "oxford_flowers102:2.*.*", 102, "validation[:200]", "test")


@VTAB_TASKS.register("oxford_iiit_pet")
def oxford_iiit_pet() -> VtabTaskSpec:
    # VTAB used 3.*.*; TFDS 4.9 can only prepare 4.0.0 (same 3680/3669 split,
    # corrupt images fixed, head boxes added), so this table names 4.*.*.
    return _spec("oxford_iiit_pet", NATURAL, "oxford_iiit_pet:4.*.*", 37, "train[2944:3144]", "test")


@VTAB_TASKS.register("svhn")
def svhn() -> VtabTaskSpec:
    return _spec("svhn", NATURAL, "svhn_cropped:3.*.*", 10, "train[65931:66131]", "test")


@VTAB_TASKS.register("sun397")
def sun397() -> VtabTaskSpec:
    return _spec("sun397", NATURAL, "sun397/tfds:4.*.*", 397, "validation[:200]", "test")


@VTAB_TASKS.register("patch_camelyon")
def patch_camelyon() -> VtabTaskSpec:
    return _spec("patch_camelyon", SPECIALIZED, "patch_camelyon:2.*.*", 2, "validation[:200]", "test")


@VTAB_TASKS.register("eurosat")
def eurosat() -> VtabTaskSpec:
    return _spec("eurosat", SPECIALIZED, "eurosat/rgb:2.*.*", 10, "train[16200:16400]", "train[21600:]")


@VTAB_TASKS.register("resisc45")
def resisc45() -> VtabTaskSpec:
    return _spec("resisc45", SPECIALIZED, "resisc45:3.*.*", 45, "train[18900:19100]", "train[25200:]")


@VTAB_TASKS.register("diabetic_retinopathy")
def diabetic_retinopathy(config: str = "btgraham-300") -> VtabTaskSpec:
    _choice("diabetic_retinopathy", "config", config, ("original", "1M", "250K", "btgraham-300"))
    return _spec(f"diabetic_retinopathy(config={config!r})", SPECIALIZED,
                 f"diabetic_retinopathy_detection/{config}:3.*.*", 5, "validation[:200]", "test")


_CLEVR_TASKS = {"count_all": (8, labels.clevr_count_all),
                "closest_object_distance": (6, labels.clevr_closest_object_distance)}


@VTAB_TASKS.register("clevr")
def clevr(task: str = "count_all") -> VtabTaskSpec:
    _choice("clevr", "task", task, _CLEVR_TASKS)
    num_classes, label_fn = _CLEVR_TASKS[task]
    return _spec(f"clevr(task={task!r})", STRUCTURED, "clevr:3.*.*", num_classes, "train[63000:63200]",
                 "validation", label_fn=label_fn)


@VTAB_TASKS.register("dmlab")
def dmlab() -> VtabTaskSpec:
    return _spec("dmlab", STRUCTURED, "dmlab:2.0.1", 6, "validation[:200]", "test")


@VTAB_TASKS.register("kitti")
def kitti(task: str = "closest_vehicle_distance") -> VtabTaskSpec:
    _choice("kitti", "task", task, ("closest_vehicle_distance",))
    return _spec(f"kitti(task={task!r})", STRUCTURED, "kitti:3.1.0", 4, "validation[:200]", "test",
                 label_fn=labels.kitti_closest_vehicle_distance)


@VTAB_TASKS.register("dsprites")
def dsprites(predicted_attribute: str = "label_x_position", num_classes: Optional[int] = None) -> VtabTaskSpec:
    _choice("dsprites", "predicted_attribute", predicted_attribute, labels.DSPRITES_CLASSES)
    original = labels.DSPRITES_CLASSES[predicted_attribute]
    num_classes = original if num_classes is None else num_classes
    _choice("dsprites", "num_classes", num_classes, range(2, original + 1))
    name = f"dsprites(predicted_attribute={predicted_attribute!r}, num_classes={num_classes})"
    # dSprites images are binary masks (pixel values 0 and 1).
    return _spec(name, STRUCTURED, "dsprites:2.*.*", num_classes, "train[589824:590024]", "train[663552:]",
                 label_fn=labels.binned_attribute(predicted_attribute, original, num_classes),
                 image_max_value=1.0)


@VTAB_TASKS.register("smallnorb")
def smallnorb(predicted_attribute: str = "label_azimuth") -> VtabTaskSpec:
    _choice("smallnorb", "predicted_attribute", predicted_attribute, labels.SMALLNORB_CLASSES)
    return _spec(f"smallnorb(predicted_attribute={predicted_attribute!r})", STRUCTURED, "smallnorb:2.*.*",
                 labels.SMALLNORB_CLASSES[predicted_attribute], "test[:200]", "test[50%:]",
                 label_fn=labels.attribute(predicted_attribute))


VTAB_1K_TASKS = (
    "caltech101", "cifar(num_classes=100)", "dtd", "oxford_flowers102", "oxford_iiit_pet", "svhn", "sun397",
    "patch_camelyon", "eurosat", "resisc45", "diabetic_retinopathy(config='btgraham-300')",
    "clevr(task='count_all')", "clevr(task='closest_object_distance')", "dmlab",
    "kitti(task='closest_vehicle_distance')",
    "dsprites(predicted_attribute='label_x_position', num_classes=16)",
    "dsprites(predicted_attribute='label_orientation', num_classes=16)",
    "smallnorb(predicted_attribute='label_azimuth')", "smallnorb(predicted_attribute='label_elevation')",
)
# VTAB-v2, the VTAB half of VTAB+MD (Dumoulin et al. 2021): VTAB-1k without dtd, which belongs to MD.
VTAB_V2_TASKS = tuple(t for t in VTAB_1K_TASKS if t != "dtd")
SUITE_TASKS = {"vtab-1k": VTAB_1K_TASKS, "vtab-v2": VTAB_V2_TASKS}
SUITE_DESCRIPTIONS = {
    "vtab-1k": "VTAB-1k (Zhai et al. 2019): 19 tasks, 1000 training examples each; "
               "score = mean accuracy over tasks, with natural/specialized/structured group means",
    "vtab-v2": "VTAB-v2, the VTAB half of VTAB+MD (Dumoulin et al. 2021): VTAB-1k without dtd (18 tasks)",
}


def vtab_spec(name: str) -> VtabTaskSpec:
    """The spec of a VTAB task name such as ``"clevr(task='count_all')"``."""
    return VTAB_TASKS.create(name)


def suite_specs(suite_name: str) -> list[VtabTaskSpec]:
    """The task specs of ``"vtab-1k"`` or ``"vtab-v2"``, in suite order."""
    if suite_name not in SUITE_TASKS:
        raise ConfigError(f"unknown VTAB suite {suite_name!r}; choose one of {sorted(SUITE_TASKS)}")
    return [vtab_spec(name) for name in SUITE_TASKS[suite_name]]


@gin.configurable
def vtab_suite(name: str, data_dir: str | Path | None = None, *, query_batch_size: int = 500) -> Suite:
    """The VTAB-1k or VTAB-v2 :class:`Suite` over TFDS data in ``data_dir``.

    Each task is one pooled-accuracy source; the evaluator's summary gives the
    task-weighted mean and the natural/specialized/structured group means.
    """
    sources = tuple(vtab_source(spec, data_dir=data_dir, suite=name, query_batch_size=query_batch_size)
                    for spec in suite_specs(name))
    return Suite(name=name, sources=sources, description=SUITE_DESCRIPTIONS[name])


def task_record(spec: VtabTaskSpec) -> dict[str, Any]:
    """The JSON object of ``fewshot-bench tasks``: name, group, tfds_name, num_classes and slices."""
    return {"name": spec.name, "group": spec.group, "tfds_name": spec.tfds_name,
            "num_classes": spec.num_classes, "train800": spec.train800, "val200": spec.val200,
            "test": spec.test}


def list_tasks(suite_name: str) -> list[dict[str, Any]]:
    """One :func:`task_record` per task of ``"vtab-1k"`` or ``"vtab-v2"``."""
    return [task_record(spec) for spec in suite_specs(suite_name)]
