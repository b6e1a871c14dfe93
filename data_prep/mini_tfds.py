"""TFDS builders of the VTAB-style datasets of the ``mini`` suite.

Importing this module registers the builders with TFDS, so a prepared
dataset can be read with ``tfds.builder("mini_digits", data_dir=root / "tfds")``.
The builders take a ``seed`` (used only when preparing); reading needs none.
Every split of every builder is a pure function of the seed.
"""

from __future__ import annotations

import abc
import contextlib
import inspect
import io
import logging
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from data_prep import mini_images, mini_sprites

logger = logging.getLogger(__name__)

TRAIN_COLUMNS = (0.0, 0.5)  # textures / histology: train crops come from the left half ...
TEST_COLUMNS = (0.5, 1.0)   # ... test crops from the right half of the photo


class _MiniBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Common part: a seed, fixed split sizes, features from ``_features()``, examples from ``_arrays()``."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release of the mini suite."}
    # train800val200 as in VTAB-1k (train[:800] + train[800:1000]), and a test split.
    SPLIT_SIZES: dict[str, int] = {"train": 1000, "test": 500}
    SIDE = 32
    CHANNELS = 3
    PIXEL_MAX = 255  # dsprites stores 0/1 like TFDS dsprites
    DESCRIPTION = ""

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # TFDS 4.9.10 resolves this through the `importlib_resources` backport,
        # which it only requires on Python < 3.9 (so it is usually missing) and
        # then fails for any builder defined in a package; the module file is
        # the answer it would give.
        return epath.Path(inspect.getfile(cls))

    def __init__(self, *, seed: int = 0, **kwargs):
        self.seed = seed
        super().__init__(**kwargs)

    @abc.abstractmethod
    def _features(self) -> dict:
        """The feature dict of one example."""

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self, description=self.DESCRIPTION,
            features=tfds.features.FeaturesDict(self._features()),
            supervised_keys=("image", "label") if "label" in self._features() else None)

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(split=split) for split in self.SPLIT_SIZES}

    @abc.abstractmethod
    def _arrays(self, split: str) -> dict[str, np.ndarray]:
        """All examples of ``split``, one array per feature (first axis: example)."""

    def _generate_examples(self, split: str) -> Iterator[tuple[int, dict]]:
        arrays = self._arrays(split)
        for i in range(self.SPLIT_SIZES[split]):
            yield i, {key: value[i] for key, value in arrays.items()}


class MiniDigits(_MiniBuilder):
    """scikit-learn's bundled 8x8 handwritten digits upsampled to 32x32 grayscale (natural)."""

    name = "mini_digits"
    DESCRIPTION = __doc__
    CHANNELS = 1

    def _features(self) -> dict:
        return {"image": tfds.features.Image(shape=(self.SIDE, self.SIDE, self.CHANNELS)),
                "label": tfds.features.ClassLabel(num_classes=10)}

    def _arrays(self, split: str) -> dict[str, np.ndarray]:
        splits = list(self.SPLIT_SIZES)
        parts = mini_images.digit_split(self.seed, [self.SPLIT_SIZES[s] for s in splits], self.SIDE)
        images, labels = parts[splits.index(split)]
        return {"image": images, "label": labels}


class MiniTextures(_MiniBuilder):
    """DTD-like texture patches cropped from bundled photos, one class per photo (natural).

    Train crops come from the left half of each photo, test crops from the right half.
    """

    name = "mini_textures"
    DESCRIPTION = __doc__

    def _features(self) -> dict:
        return {"image": tfds.features.Image(shape=(self.SIDE, self.SIDE, self.CHANNELS)),
                "label": tfds.features.ClassLabel(names=list(mini_images.TEXTURES))}

    def _arrays(self, split: str) -> dict[str, np.ndarray]:
        columns = TRAIN_COLUMNS if split == "train" else TEST_COLUMNS
        images, labels = mini_images.texture_crops(self.seed, split, self.SPLIT_SIZES[split],
                                                   self.SIDE, columns)
        return {"image": images, "label": labels}


class MiniHistology(_MiniBuilder):
    """PatchCamelyon-like: is the centre of a 32x32 immunohistochemistry patch stained? (specialized)

    Train patches come from the left half of the photo, test patches from the right half.
    """

    name = "mini_histology"
    DESCRIPTION = __doc__

    def _features(self) -> dict:
        return {"image": tfds.features.Image(shape=(self.SIDE, self.SIDE, self.CHANNELS)),
                "label": tfds.features.ClassLabel(names=["unstained", "stained"])}

    def _arrays(self, split: str) -> dict[str, np.ndarray]:
        columns = TRAIN_COLUMNS if split == "train" else TEST_COLUMNS
        images, labels = mini_images.histology_patches(self.seed, split, self.SPLIT_SIZES[split],
                                                       self.SIDE, columns)
        return {"image": images, "label": labels}


class MiniDsprites(_MiniBuilder):
    """Procedural dSprites: 64x64 binary sprites (values 0/1) with the dSprites latents (structured).

    Features mirror TFDS ``dsprites`` 2.0.0: ``label_<factor>`` class indices and
    ``value_<factor>`` values, so VTAB's label derivations apply unchanged.
    """

    name = "mini_dsprites"
    DESCRIPTION = __doc__
    SIDE = mini_sprites.SIDE
    CHANNELS = 1
    PIXEL_MAX = 1

    def _features(self) -> dict:
        features = {"image": tfds.features.Image(shape=(self.SIDE, self.SIDE, self.CHANNELS))}
        for factor, size in mini_sprites.CARDINALITIES.items():
            features[f"label_{factor}"] = tfds.features.ClassLabel(num_classes=size)
        for factor in mini_sprites.CARDINALITIES:
            features[f"value_{factor}"] = tfds.features.Tensor(shape=(), dtype=np.float32)
        return features

    def _arrays(self, split: str) -> dict[str, np.ndarray]:
        latents = mini_sprites.sample_latents(mini_images.rng_for(self.seed, self.name, split),
                                              self.SPLIT_SIZES[split])
        factors = list(mini_sprites.CARDINALITIES)
        images = [mini_sprites.render(*(int(latents[f][i]) for f in factors))
                  for i in range(self.SPLIT_SIZES[split])]
        arrays: dict[str, np.ndarray] = {"image": np.stack(images)}
        for factor in factors:
            arrays[f"label_{factor}"] = latents[factor]
            arrays[f"value_{factor}"] = mini_sprites.LATENT_VALUES[factor][latents[factor]].astype(np.float32)
        return arrays


BUILDERS: tuple[type[_MiniBuilder], ...] = (MiniDigits, MiniTextures, MiniHistology, MiniDsprites)


def canonicalise_records(path: Path) -> None:
    """Re-serialise every tf.train.Example of a TFRecord file with sorted feature keys.

    TFDS serialises the feature map in an order that changes from process to
    process (protobuf map order), so the same examples give different bytes;
    sorted keys make the file a function of its content. Record sizes, and
    so ``numBytes`` in dataset_info.json, do not change.
    """
    import tensorflow as tf
    records = [tf.train.Example.FromString(r.numpy()).SerializeToString(deterministic=True)
               for r in tf.data.TFRecordDataset(str(path))]
    staging = path.with_name(path.name + ".canonical")
    with tf.io.TFRecordWriter(str(staging)) as writer:
        for record in records:
            writer.write(record)
    staging.replace(path)


def prepare_all(data_dir: Path, scratch: Path, seed: int) -> None:
    """Prepare every mini TFDS dataset into ``data_dir`` (deterministic bytes).

    ``scratch`` receives TFDS's download directory and the empty temporary
    directories TFDS leaves behind when it creates a builder for data not yet
    prepared (``DatasetInfo.initialize_from_bucket``); the caller removes it.
    TFDS's progress bars are hidden and its printed messages (which name the
    staging directory) go to the debug log.
    """
    from tensorflow_datasets.core.utils import tqdm_utils
    shown, tempdir = getattr(tqdm_utils, "_active", True), tempfile.tempdir
    tfds.display_progress_bar(False)
    tempfile.tempdir = str(scratch)
    try:
        for builder_class in BUILDERS:
            with contextlib.redirect_stdout(io.StringIO()) as printed:
                builder = builder_class(data_dir=str(data_dir), seed=seed)
                builder.download_and_prepare(download_dir=str(scratch / "downloads"))
            logger.debug("%s", printed.getvalue())
            for shard in sorted(Path(builder.data_dir).glob(f"{builder.name}-*.tfrecord-*")):
                canonicalise_records(shard)
    finally:
        tempfile.tempdir = tempdir
        tfds.display_progress_bar(shown)
