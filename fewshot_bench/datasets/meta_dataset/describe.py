"""Inspecting a source: episode descriptions (``fewshot-bench episodes``) and a consistency check."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Optional

from fewshot_bench.datasets.meta_dataset.episodes import EpisodeLayout, layout_fingerprint
from fewshot_bench.datasets.meta_dataset.reader import SourceReader, decode_image, index_records, parse_example
from fewshot_bench.datasets.meta_dataset.sampler import EpisodeConfig, EpisodeSampler
from fewshot_bench.datasets.meta_dataset.spec import load_spec
from fewshot_bench.errors import ConfigError, DataError, FewshotBenchError

MAX_PROBLEMS_PER_CLASS = 3


def describe_episodes(spec: str | Path | None = None, *, records_root: str | Path | None = None,
                      source: Optional[str] = None, split: str = "test", num: int = 600, seed: int = 0,
                      episode_config: Optional[EpisodeConfig] = None, start: int = 0) -> Iterator[dict]:
    """Describe episodes ``start .. start + num - 1``, one dict each.

    Keys: ``classes`` (class ids relative to the split, in label order),
    ``shots`` and ``query`` (support and query images per class). Given
    ``spec`` (a ``dataset_spec.json``) only the protocol is used; given
    ``records_root`` and ``source``, the episodes are those ``md_source``
    builds: the class files they use are indexed and checked against the spec,
    and each description adds the episode's ``fingerprint``.
    """
    if (spec is None) == (records_root is None or source is None):
        raise ConfigError("describe episodes either from --spec PATH/TO/dataset_spec.json or from "
                          "--records ROOT --source NAME, not both or neither")
    reader = None
    if spec is not None:
        dataset_spec = load_spec(spec)
        name = source or dataset_spec.name
    else:
        reader = SourceReader(Path(records_root) / source)
        dataset_spec, name = reader.spec, source
    sampler = EpisodeSampler(dataset_spec, split, episode_config, source=name)
    for index in range(start, start + num):
        episode = sampler.episode(seed, index)
        description = {"classes": [dataset_spec.relative_class(split, c) for c in episode.classes],
                       "shots": list(episode.shots), "query": list(episode.query)}
        if reader is not None:
            for class_id in episode.classes:
                reader.class_index(class_id)
            description["fingerprint"] = layout_fingerprint(name, EpisodeLayout.of(episode))
        yield description


def check_class(reader: SourceReader, class_id: int, decode: bool = True) -> list[str]:
    """Every problem of one class file: missing, truncated, corrupt (CRC), wrong count, label or image."""
    import tensorflow as tf

    path = reader.class_file(class_id)
    where = reader.where(class_id)
    if not path.is_file():
        return [f"{where}: the class file is missing; copy it from the converted source or convert it again"]
    problems = []
    try:
        count = len(index_records(path)[0])
    except DataError as e:
        problems.append(f"source {reader.source!r} class {class_id}: {e}")
        count = None
    expected = reader.spec.images_per_class[class_id]
    if count is not None and count != expected:
        problems.append(f"{where} holds {count} records but the spec {reader.spec.path} says {expected}; "
                        f"convert the source again or regenerate its dataset_spec.json")
    record_problems = []
    try:
        for record, data in enumerate(tf.data.TFRecordDataset(str(path)).as_numpy_iterator()):
            at = reader.where(class_id, record)
            try:
                image, label = parse_example(data, at)
                if label != class_id:
                    raise DataError(f"{at} has label {label}, not its class id {class_id}; "
                                    f"the file may be misnamed: convert the source again")
                if decode:
                    decode_image(image, 8, at)
            except DataError as e:
                record_problems.append(str(e))
    except tf.errors.DataLossError as e:
        if count is not None:  # a truncated file is reported above already
            problems.append(f"{where} is corrupt ({str(e).splitlines()[0]}); copy or convert the file again")
    if len(record_problems) > MAX_PROBLEMS_PER_CLASS:
        extra = len(record_problems) - MAX_PROBLEMS_PER_CLASS
        record_problems = record_problems[:MAX_PROBLEMS_PER_CLASS] + [f"{where}: {extra} more bad records"]
    return problems + record_problems


def check_source(records_root: str | Path, source: str, decode: bool = True) -> list[str]:
    """Every consistency problem of a source at once (empty when the source is sound).

    Checks the spec, then each class file the spec lists: present, complete,
    CRCs intact, record count equal to the spec's, labels equal to the class id
    and (``decode=True``) images that decode; and reports ``.tfrecords`` files
    the spec does not list.
    """
    records_dir = Path(records_root) / source
    try:
        reader = SourceReader(records_dir)
    except FewshotBenchError as e:
        return [f"source {source!r}: {e}"]
    problems = []
    for class_id in sorted(reader.spec.images_per_class):
        problems.extend(check_class(reader, class_id, decode))
    listed = {reader.class_file(c).name for c in reader.spec.images_per_class}
    for path in sorted(records_dir.glob("*.tfrecords")):
        if path.name not in listed:
            problems.append(f"source {source!r}: {path} is not a class of the spec {reader.spec.path}; "
                            f"remove it or regenerate the spec")
    return problems
