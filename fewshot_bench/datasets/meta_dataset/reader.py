"""Random access to Meta-Dataset records in the reference layout.

``<records_root>/<source>/dataset_spec.json`` plus one ``<class_id>.tfrecords``
per class, each record a ``tf.train.Example`` with ``image`` (encoded bytes)
and ``label`` (int64). Instead of one shuffle buffer and one open file per
class, a class file is indexed on first use (the byte offset of each record,
read from the TFRecord framing: 8-byte length, 4-byte CRC, data, 4-byte CRC)
and records are then read by plain seeks. A read opens one file at a time.
"""

from __future__ import annotations

import io
import struct
import threading
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

import numpy as np

from fewshot_bench.datasets.meta_dataset.spec import DatasetSpec, load_spec
from fewshot_bench.errors import DataError

HEADER_BYTES = 12  # uint64 length + uint32 masked CRC of the length
FOOTER_BYTES = 4   # uint32 masked CRC of the data
DEFAULT_IMAGE_SIZE = 126


def index_records(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Byte offsets and lengths of the data of every record in a TFRecord file.

    Only the 12-byte headers are read. A record that runs past the end of the
    file (a truncated copy) raises :class:`DataError`.
    """
    offsets, lengths = [], []
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        position = 0
        while position < size:
            f.seek(position)
            header = f.read(HEADER_BYTES)
            if len(header) < HEADER_BYTES:
                raise DataError(f"{path} is truncated: record {len(offsets)} has an incomplete header; "
                                f"copy or convert the file again")
            (length,) = struct.unpack("<Q", header[:8])
            end = position + HEADER_BYTES + length + FOOTER_BYTES
            if end > size:
                raise DataError(f"{path} is truncated: record {len(offsets)} needs {length} bytes but the file "
                                f"ends first; copy or convert the file again")
            offsets.append(position + HEADER_BYTES)
            lengths.append(length)
            position = end
    return np.asarray(offsets, dtype=np.int64), np.asarray(lengths, dtype=np.int64)


def parse_example(data: bytes, where: str) -> tuple[bytes, int]:
    """The ``image`` bytes and ``label`` of one serialized ``tf.train.Example``."""
    import tensorflow as tf

    try:
        features = tf.train.Example.FromString(data).features.feature
        image = features["image"].bytes_list.value[0]
        label = int(features["label"].int64_list.value[0])
    except Exception as e:  # protobuf DecodeError, missing key or empty list
        raise DataError(f"{where} is not a tf.train.Example with 'image' bytes and an int64 'label' ({e!r}); "
                        f"convert the source again with the reference tools") from e
    return image, label


def decode_sized(data: bytes, image_size: int, where: str) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode, resize bilinearly to ``image_size`` and scale to float32 in [0, 1]; also the decoded ``(h, w)``.

    As in the reference decoder: ``decode_image(channels=3)`` (grayscale is tiled
    to RGB, alpha dropped) then bilinear resizing with ``align_corners=True``.
    """
    import tensorflow as tf

    try:
        pixels = tf.io.decode_image(data, channels=3, expand_animations=False)
    except (tf.errors.OpError, ValueError) as e:
        raise DataError(f"{where}: the image does not decode ({str(e).splitlines()[0]}); "
                        f"re-encode it or convert the source again") from e
    size = (int(pixels.shape[0]), int(pixels.shape[1]))
    if size == (image_size, image_size):  # resizing to the same size is the identity
        return pixels.numpy().astype(np.float32) / np.float32(255.0), size
    resized = tf.raw_ops.ResizeBilinear(images=tf.expand_dims(pixels, 0), size=[image_size, image_size],
                                        align_corners=True, half_pixel_centers=False)
    return resized.numpy()[0] / np.float32(255.0), size


def header_size(data: bytes, where: str) -> tuple[int, int]:
    """The ``(h, w)`` :func:`decode_sized` gives, read from the image's header (no pixels decoded).

    An image whose header PIL cannot read is decoded instead, so a broken image
    raises the same :class:`DataError`.
    """
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except Exception:  # noqa: BLE001 -- PIL cannot identify it: let the decoder have the last word
        return decode_sized(data, 1, where)[1]
    return int(height), int(width)


def decode_image(data: bytes, image_size: int, where: str) -> np.ndarray:
    """:func:`decode_sized` without the size: the ``[image_size, image_size, 3]`` float32 image."""
    return decode_sized(data, image_size, where)[0]


class SourceReader:
    """Reads chosen records of one source; class files are indexed lazily, once.

    Thread-safe: indexing is guarded by a lock; each read opens, seeks and closes
    its file, so at most one file per reading thread is open.
    """

    def __init__(self, records_dir: str | Path, spec: Optional[DatasetSpec] = None):
        self.records_dir = Path(records_dir)
        self.spec = spec if spec is not None else load_spec(self.records_dir)
        self._index: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._lock = threading.Lock()

    @property
    def source(self) -> str:
        return self.spec.name

    def class_file(self, class_id: int) -> Path:
        return self.spec.class_file(self.records_dir, class_id)

    def where(self, class_id: int, record: Optional[int] = None) -> str:
        at = "" if record is None else f" record {record}"
        return f"source {self.source!r} class {class_id} ({self.class_file(class_id)}){at}"

    def class_index(self, class_id: int) -> tuple[np.ndarray, np.ndarray]:
        """Offsets and lengths of the class's records; checks the count against the spec."""
        with self._lock:
            if class_id in self._index:
                return self._index[class_id]
        path = self.class_file(class_id)
        if class_id not in self.spec.images_per_class:
            raise DataError(f"source {self.source!r} has no class {class_id} in its spec "
                            f"{self.spec.path}; use a class id listed there")
        if not path.is_file():
            raise DataError(f"{self.where(class_id)}: the class file is missing; copy it from the converted "
                            f"source or convert the source again")
        try:
            index = index_records(path)
        except DataError as e:
            raise DataError(f"source {self.source!r} class {class_id}: {e}") from e
        expected = self.spec.images_per_class[class_id]
        if len(index[0]) != expected:
            raise DataError(f"{self.where(class_id)} holds {len(index[0])} records but the spec "
                            f"{self.spec.path} says {expected}; convert the source again or regenerate "
                            f"its dataset_spec.json so the two agree")
        with self._lock:
            self._index[class_id] = index
        return index

    @property
    def indexed_classes(self) -> int:
        return len(self._index)

    def read_raw(self, class_id: int, records: Sequence[int]) -> list[bytes]:
        """The serialized records ``records`` (indices within the class file), in that order."""
        offsets, lengths = self.class_index(class_id)
        out = []
        try:
            with open(self.class_file(class_id), "rb") as f:
                for r in records:
                    f.seek(int(offsets[r]))
                    data = f.read(int(lengths[r]))
                    if len(data) != lengths[r]:
                        raise DataError(f"{self.where(class_id, r)} is truncated; copy or convert the file again")
                    out.append(data)
        except OSError as e:
            raise DataError(f"{self.where(class_id)} cannot be read ({e}); check that the records are "
                            f"still in place and readable") from e
        return out

    def read_encoded(self, class_id: int, records: Sequence[int]) -> Iterator[tuple[bytes, str]]:
        """The encoded image of each record, with its description for errors; checks each label is the class id."""
        for r, data in zip(records, self.read_raw(class_id, records)):
            where = self.where(class_id, r)
            image, label = parse_example(data, where)
            if label != class_id:
                raise DataError(f"{where} has label {label}, not its class id {class_id}; the file may be "
                                f"misnamed: convert the source again")
            yield image, where

    def read_sized(self, class_id: int, records: Sequence[int], image_size: int) -> tuple[np.ndarray, np.ndarray]:
        """The records' images and their sizes before the resize.

        Returns ``[len(records), image_size, image_size, 3]`` float32 images in
        [0, 1] and ``[len(records), 2]`` (height, width) as decoded.
        """
        images = np.empty((len(records), image_size, image_size, 3), dtype=np.float32)
        sizes = np.empty((len(records), 2), dtype=np.int64)
        for i, (image, where) in enumerate(self.read_encoded(class_id, records)):
            images[i], sizes[i] = decode_sized(image, image_size, where)
        return images, sizes

    def read_sizes(self, class_id: int, records: Sequence[int]) -> np.ndarray:
        """The records' ``[len(records), 2]`` (height, width) as decoded, read from the image headers."""
        sizes = np.empty((len(records), 2), dtype=np.int64)
        for i, (image, where) in enumerate(self.read_encoded(class_id, records)):
            sizes[i] = header_size(image, where)
        return sizes

    def read_images(self, class_id: int, records: Sequence[int], image_size: int) -> np.ndarray:
        """Decoded ``[len(records), image_size, image_size, 3]`` float32 images in [0, 1]."""
        return self.read_sized(class_id, records, image_size)[0]

    def read_many(self, requests: Iterable[tuple[int, Sequence[int]]], image_size: int) -> np.ndarray:
        """Images of several (class id, records) requests, concatenated in request order."""
        parts = [self.read_images(c, records, image_size) for c, records in requests]
        if not parts:
            return np.zeros((0, image_size, image_size, 3), np.float32)
        return np.concatenate(parts)


def image_id(source: str, class_id: int, record: int) -> str:
    """The stable id of one image: ``"<source>/<class_id>/<record index>"``."""
    return f"{source}/{class_id}/{record}"


def parse_image_id(image_id_: str) -> tuple[str, int, int]:
    """Invert :func:`image_id`: ``(source, class_id, record)``."""
    try:
        source, class_id, record = image_id_.rsplit("/", 2)
        return source, int(class_id), int(record)
    except ValueError as e:
        raise DataError(f"{image_id_!r} is not a Meta-Dataset image id '<source>/<class_id>/<record>'") from e
