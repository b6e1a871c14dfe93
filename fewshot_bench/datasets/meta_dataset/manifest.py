"""Episode manifests (ids and labels, replayed exactly) and full episode dumps (pixels).

A manifest is a JSON-lines file: a header line, then one line per episode
``{"index", "fingerprint", "classes", "support", "query"}`` where
``support[label]`` / ``query[label]`` list the record indices (within the class
file of ``classes[label]``) of that label's images, in Task order.

A dump is a directory holding such a manifest and one
``episode_<index>.tfrecords`` per episode whose records carry each image's
original encoded bytes with its id, label and role, so the episodes can be
shared and rebuilt, at any image size, without the source.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from fewshot_bench.datasets.meta_dataset.episodes import EpisodeLayout, layout_fingerprint, layout_task
from fewshot_bench.datasets.meta_dataset.reader import SourceReader, decode_sized, image_id, index_records
from fewshot_bench.datasets.meta_dataset.sampler import EpisodeConfig, EpisodeDescription, EpisodeSampler
from fewshot_bench.errors import DataError
from fewshot_bench.tasks import EPISODES, Examples, QueryStream, Task, TaskInfo, TaskSource, median_area

FORMAT = "fewshot_bench.md_manifest/1"
MANIFEST_FILE = "manifest.jsonl"


def episode_entry(source: str, index: int, episode: EpisodeDescription) -> dict:
    layout = EpisodeLayout.of(episode)
    return {"index": index, "fingerprint": layout_fingerprint(source, layout), "classes": list(episode.classes),
            "support": [list(r) for r in episode.support_records], "query": [list(r) for r in episode.query_records]}


def entry_layout(entry: dict) -> EpisodeLayout:
    classes = entry["classes"]
    support = tuple((c, r, label) for label, c in enumerate(classes) for r in entry["support"][label])
    query = tuple((c, r, label) for label, c in enumerate(classes) for r in entry["query"][label])
    return EpisodeLayout(support, query)


def write_manifest(path: str | Path, records_root: str | Path, source: str, split: str, seed: int,
                   indices: Iterable[int], episode_config: Optional[EpisodeConfig] = None) -> Path:
    """Write the manifest of episodes ``indices`` of ``md_source(records_root, source, split)`` for ``seed``.

    Only the spec is read: the episodes' ids follow from the protocol.
    """
    reader = SourceReader(Path(records_root) / source)
    sampler = EpisodeSampler(reader.spec, split, episode_config, source=source)
    header = {"format": FORMAT, "source": source, "split": sampler.split, "seed": int(seed)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        f.write(json.dumps(header) + "\n")
        for index in indices:
            f.write(json.dumps(episode_entry(source, int(index), sampler.episode(seed, int(index)))) + "\n")
    return path


def read_manifest(path: str | Path) -> tuple[dict, list[dict]]:
    """The header and the episode entries of a manifest; each entry's fingerprint is verified."""
    path = Path(path)
    try:
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read episode manifest {path}: {e}; write it again with write_manifest") from e
    if not lines or lines[0].get("format") != FORMAT:
        raise DataError(f"{path} is not an episode manifest (first line must carry format {FORMAT!r})")
    header, entries = lines[0], lines[1:]
    for entry in entries:
        if layout_fingerprint(header["source"], entry_layout(entry)) != entry["fingerprint"]:
            raise DataError(f"{path}: episode {entry['index']} does not match its fingerprint "
                            f"{entry['fingerprint']}; the manifest was edited or damaged, write it again")
    return header, entries


def manifest_source(path: str | Path, records_root: str | Path, suite: str = "md-v2", group: str = "md",
                    query_batch_size: int = 500) -> TaskSource:
    """Replay a manifest: task ``i`` is the manifest's ``i``-th episode, read from ``records_root``.

    The ``seed`` passed to ``build`` is ignored: the episodes are fixed by the manifest.
    """
    header, entries = read_manifest(path)
    source = header["source"]
    reader = SourceReader(Path(records_root) / source)

    def build(i: int, seed: int, image_size: int) -> Task:
        entry = entries[i]
        return layout_task(reader, source, entry_layout(entry), len(entry["classes"]), image_size=image_size,
                           task_id=str(entry["index"]), seed=header["seed"], suite=suite, group=group,
                           query_batch_size=query_batch_size)

    return TaskSource(name=source, group=group, scoring=EPISODES, num_tasks=len(entries), build=build,
                      benchmark="md")


# ----------------------------------------------------------------------------
# Full dumps.

def _dump_record(image: bytes, image_id_: str, label: int, role: str) -> bytes:
    import tensorflow as tf

    def b(value: bytes):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    feature = {"image": b(image), "id": b(image_id_.encode()), "role": b(role.encode()),
               "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)]))}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def dump_episodes(out_dir: str | Path, records_root: str | Path, source: str, split: str, seed: int,
                  indices: Iterable[int], episode_config: Optional[EpisodeConfig] = None) -> Path:
    """Write the manifest and the images (original encoded bytes) of episodes ``indices``."""
    from fewshot_bench.datasets.meta_dataset.reader import parse_example
    from fewshot_bench.datasets.meta_dataset.writer import write_tfrecords

    out_dir = Path(out_dir)
    indices = [int(i) for i in indices]
    manifest = write_manifest(out_dir / MANIFEST_FILE, records_root, source, split, seed, indices, episode_config)
    reader = SourceReader(Path(records_root) / source)
    for entry in read_manifest(manifest)[1]:
        layout = entry_layout(entry)
        records = []
        for role in ("support", "query"):
            for c, r, label in getattr(layout, role):
                image, _ = parse_example(reader.read_raw(c, [r])[0], reader.where(c, r))
                records.append(_dump_record(image, image_id(source, c, r), label, role))
        write_tfrecords(out_dir / f"episode_{entry['index']}.tfrecords", records)
    return out_dir


def _read_dumped(path: Path, image_size: int) -> tuple[dict[str, Examples], np.ndarray]:
    """The support and query Examples of an episode file, and the support images' (height, width) as decoded."""
    import tensorflow as tf

    if not path.is_file():
        raise DataError(f"episode dump file {path} is missing; dump the episodes again")
    parts: dict[str, tuple[list, list, list, list]] = {"support": ([], [], [], []), "query": ([], [], [], [])}
    offsets, lengths = index_records(path)
    with open(path, "rb") as f:
        for r, (offset, length) in enumerate(zip(offsets, lengths)):
            f.seek(int(offset))
            feature = tf.train.Example.FromString(f.read(int(length))).features.feature
            images, labels, ids, sizes = parts[feature["role"].bytes_list.value[0].decode()]
            image, size = decode_sized(feature["image"].bytes_list.value[0], image_size, f"{path} record {r}")
            images.append(image)
            sizes.append(size)
            labels.append(feature["label"].int64_list.value[0])
            ids.append(feature["id"].bytes_list.value[0].decode())
    examples = {role: Examples(np.stack(images) if images else np.zeros((0, image_size, image_size, 3), np.float32),
                               np.asarray(labels, np.int64), tuple(ids))
                for role, (images, labels, ids, _) in parts.items()}
    return examples, np.asarray(parts["support"][3], np.int64).reshape(-1, 2)


def dumped_source(dump_dir: str | Path, suite: str = "md-v2", group: str = "md",
                  query_batch_size: int = 500) -> TaskSource:
    """The episodes of a dump as a TaskSource (task ``i`` is the dump's ``i``-th episode)."""
    dump_dir = Path(dump_dir)
    header, entries = read_manifest(dump_dir / MANIFEST_FILE)

    def build(i: int, seed: int, image_size: int) -> Task:
        entry = entries[i]
        parts, support_sizes = _read_dumped(dump_dir / f"episode_{entry['index']}.tfrecords", image_size)
        return Task(support=parts["support"], query=QueryStream.from_examples(parts["query"], query_batch_size),
                    num_classes=len(entry["classes"]), suite=suite, group=group, source=header["source"],
                    task_id=str(entry["index"]), seed=header["seed"], validation=None,
                    info=TaskInfo(header["source"], "md", median_area(support_sizes)))

    return TaskSource(name=header["source"], group=group, scoring=EPISODES, num_tasks=len(entries), build=build,
                      benchmark="md")
