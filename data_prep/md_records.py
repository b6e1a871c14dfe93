"""Writer of Meta-Dataset sources in the reference on-disk layout.

A source directory holds ``dataset_spec.json`` (the reference
``DatasetSpecification`` / ``BiLevelDatasetSpecification`` /
``HierarchicalDatasetSpecification`` JSON) and one
``<class_id>.tfrecords`` file per class whose records are ``tf.train.Example``
protos with features ``image`` (encoded PNG bytes) and ``label`` (int64, the
class id). Class ids number the TRAIN classes first, then VALID, then TEST.
Output is deterministic: PNG without metadata, records in the given order,
protos serialised with sorted map keys. ``example_bytes`` takes any encoded
image (the Meta-Dataset converters in ``data_prep.md_convert`` store JPEG).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
from PIL import Image

SPLITS = ("TRAIN", "VALID", "TEST")
FILE_PATTERN = "{}.tfrecords"
SPEC_FILE = "dataset_spec.json"


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of a uint8 HxW (gray) or HxWx3 (RGB) image, without metadata chunks."""
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", optimize=False, compress_level=9)
    return buffer.getvalue()


def example_bytes(png: bytes, label: int) -> bytes:
    """A serialised ``tf.train.Example`` with ``image`` (bytes) and ``label`` (int64)."""
    import tensorflow as tf
    example = tf.train.Example(features=tf.train.Features(feature={
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[png])),
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
    }))
    return example.SerializeToString(deterministic=True)


def write_class(source_dir: Path, class_id: int, images: Iterable[np.ndarray]) -> int:
    """Write ``<class_id>.tfrecords`` in ``source_dir``; returns the number of records."""
    import tensorflow as tf
    count = 0
    with tf.io.TFRecordWriter(str(source_dir / FILE_PATTERN.format(class_id))) as writer:
        for image in images:
            writer.write(example_bytes(encode_png(image), class_id))
            count += 1
    return count


def _numbered(values: Sequence) -> dict[str, object]:
    return {str(i): v for i, v in enumerate(values)}


def dataset_spec(name: str, class_names: Mapping[str, Sequence[str]],
                 images_per_class: Sequence[int], path: str = ".") -> dict:
    """A flat ``DatasetSpecification``; ``class_names`` maps each split to its class names."""
    names = [n for split in SPLITS for n in class_names[split]]
    return {
        "name": name,
        "classes_per_split": {split: len(class_names[split]) for split in SPLITS},
        "images_per_class": _numbered(list(images_per_class)),
        "class_names": _numbered(names),
        "path": path,
        "file_pattern": FILE_PATTERN,
        "__class__": "DatasetSpecification",
    }


def bilevel_dataset_spec(name: str, superclasses: Mapping[str, Sequence[tuple[str, Sequence[str]]]],
                         images_per_class: Sequence[int], path: str = ".") -> dict:
    """A two-level ``BiLevelDatasetSpecification`` (Omniglot: alphabets -> characters).

    ``superclasses`` maps each split to ``(superclass name, its class names)`` pairs.
    """
    ordered = [sc for split in SPLITS for sc in superclasses[split]]
    return {
        "name": name,
        "superclasses_per_split": {split: len(superclasses[split]) for split in SPLITS},
        "classes_per_superclass": _numbered([len(classes) for _, classes in ordered]),
        "images_per_class": _numbered(list(images_per_class)),
        "superclass_names": _numbered([sc_name for sc_name, _ in ordered]),
        "class_names": _numbered([c for _, classes in ordered for c in classes]),
        "path": path,
        "file_pattern": FILE_PATTERN,
        "__class__": "BiLevelDatasetSpecification",
    }


def hierarchical_dataset_spec(name: str, split_subgraphs: Mapping[str, Sequence[Mapping]],
                              images_per_node: Mapping[str, Mapping[str, int]], class_names: Sequence[str],
                              path: str = ".") -> dict:
    """A ``HierarchicalDatasetSpecification`` (ILSVRC-2012: one WordNet subgraph per split).

    ``split_subgraphs[split]`` lists the split's nodes as ``{"wn_id", "words",
    "children_ids", "parents_ids"}``; ``images_per_node[split]`` maps every node
    of that subgraph to the images of the leaves it spans; ``class_names`` are the
    leaves' wn_ids in class-id order (train leaves, then valid, then test).
    """
    return {
        "name": name,
        "split_subgraphs": {split: [dict(node) for node in split_subgraphs[split]] for split in SPLITS},
        "images_per_class": {split: {k: int(v) for k, v in images_per_node[split].items()} for split in SPLITS},
        "class_names": _numbered(list(class_names)),
        "path": path,
        "file_pattern": FILE_PATTERN,
        "__class__": "HierarchicalDatasetSpecification",
    }


def write_spec(source_dir: Path, spec: dict) -> Path:
    """Write ``dataset_spec.json`` exactly as the reference converter does (indent 2).

    The file is written whole or not at all (a temporary file renamed into place).
    """
    path = source_dir / SPEC_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path
