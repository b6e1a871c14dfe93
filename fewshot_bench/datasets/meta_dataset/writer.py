"""Write sources in the reference Meta-Dataset layout (for tests, benchmarks and converters).

One ``<class_id>.tfrecords`` per class, each record a ``tf.train.Example`` with
``image`` (encoded bytes) and ``label`` (int64), and a flat ``dataset_spec.json``.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np


def encode_png(pixels: np.ndarray) -> bytes:
    """PNG bytes of a uint8 image ``[h, w]`` or ``[h, w, c]``."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def encode_jpeg(pixels: np.ndarray, quality: int = 90) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def example_bytes(image: bytes, label: int) -> bytes:
    """A serialized ``tf.train.Example`` as the reference converter writes it."""
    import tensorflow as tf

    feature = {"image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image])),
               "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)]))}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_tfrecords(path: str | Path, records: Iterable[bytes]) -> None:
    import tensorflow as tf

    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)


def write_class(records_dir: str | Path, class_id: int, images: Sequence[bytes]) -> Path:
    """Write ``<class_id>.tfrecords`` holding the encoded ``images`` labelled ``class_id``."""
    path = Path(records_dir) / f"{class_id}.tfrecords"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_tfrecords(path, (example_bytes(image, class_id) for image in images))
    return path


def write_flat_spec(records_dir: str | Path, name: str, classes_per_split: Mapping[str, int],
                    images_per_class: Mapping[int, int]) -> Path:
    """Write a flat ``dataset_spec.json`` (``classes_per_split`` keyed train/valid/test)."""
    data = {"name": name,
            "classes_per_split": {k.upper(): int(v) for k, v in classes_per_split.items()},
            "images_per_class": {str(k): int(v) for k, v in images_per_class.items()},
            "class_names": {str(k): f"class_{k}" for k in images_per_class},
            "path": str(records_dir), "file_pattern": "{}.tfrecords", "__class__": "DatasetSpecification"}
    path = Path(records_dir) / "dataset_spec.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))
    return path


def marker_pixels(class_id: int, record: int, size: int) -> np.ndarray:
    """A constant uint8 image whose colour names its class and record (R = class, G = record, B = 7)."""
    pixels = np.empty((size, size, 3), dtype=np.uint8)
    pixels[...] = (class_id % 256, record % 256, 7)
    return pixels


def write_synthetic_source(records_dir: str | Path, name: str, classes_per_split: Mapping[str, int],
                           images_per_class: Mapping[int, int], image_size: int = 8, fmt: str = "png") -> Path:
    """A flat source of :func:`marker_pixels` images (``fmt`` "png" or "jpeg") plus its spec."""
    encode = encode_png if fmt == "png" else encode_jpeg
    for class_id, count in images_per_class.items():
        write_class(records_dir, class_id, [encode(marker_pixels(class_id, r, image_size)) for r in range(count)])
    return write_flat_spec(records_dir, name, classes_per_split, images_per_class)
