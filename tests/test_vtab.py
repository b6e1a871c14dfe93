"""The generic VTAB reader over TFDS builders, on tfds.testing.mock_data (no network).

``FakeTfds`` replaces TFDS' file reader: it records every split string a
builder is asked for and serves a few random examples (random image sizes)
per request, with labels the tests choose.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pytest

from fewshot_bench.datasets import vtab
from fewshot_bench.datasets.vtab import VtabTaskSpec
from fewshot_bench.errors import ConfigError, DataError
from fewshot_bench.evaluation.scores import pooled_accuracy
from fewshot_bench.tasks import POOLED, TaskInfo

tfds = pytest.importorskip("tensorflow_datasets")
tf = pytest.importorskip("tensorflow")
from tensorflow_datasets.testing import mocking  # noqa: E402


class FakeTfds:
    """Serves ``num_examples`` fake examples for every split request and records the requests.

    ``fixup(builder_name, index, example)`` may overwrite fields of the
    generated (numpy) example, e.g. to give it a known label.
    """

    def __init__(self, num_examples: int = 6, fixup: Optional[Callable[[str, int, dict], dict]] = None):
        self.num_examples = num_examples
        self.fixup = fixup
        self.calls: list[tuple[str, str]] = []

    def mock(self):
        """``tfds.testing.mock_data`` serving this fake (TFDS calls the reader as a builder method)."""
        return tfds.testing.mock_data(as_dataset_fn=lambda builder, **kw: self.read(builder, **kw))

    def read(self, builder, split, decoders=None, read_config=None, shuffle_files=False, **_):
        assert shuffle_files is False, "VTAB slices must be read in order"
        self.calls.append((builder.name, str(split)))
        count = self.num_examples
        if builder.info.splits:  # prepared metadata: TFDS resolves (and bounds-checks) the slice
            count = min(count, builder.info.splits[split].num_examples)
        features = builder.info.features
        generated = mocking.RandomFakeGenerator(features, count, seed=len(self.calls))
        examples = [self.fixup(builder.name, i, ex) if self.fixup else ex for i, ex in enumerate(generated)]
        info = features.get_tensor_info()
        return tf.data.Dataset.from_generator(
            lambda: iter(examples),
            output_types=tf.nest.map_structure(lambda t: t.dtype, info),
            output_shapes=tf.nest.map_structure(lambda t: t.shape, info))

    def splits(self, dataset: str) -> list[str]:
        return [split for name, split in self.calls if name == dataset]


def make_data_dir(root: Path, specs) -> Path:
    """A data_dir in which every spec's dataset looks prepared (version folder + dataset_info.json)."""
    for spec in specs:
        dataset, pattern = vtab.split_tfds_name(spec.tfds_name)
        version = (pattern or "1.0.0").replace("*", "0")
        folder = root / dataset / version
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "dataset_info.json").write_text(json.dumps({"name": dataset, "version": version}))
    return root


def write_prepared(root: Path, tfds_name: str, sizes: dict[str, int]) -> Path:
    """Write the metadata TFDS leaves in a prepared dataset folder (no records), with these split sizes."""
    builder = tfds.builder(tfds_name, data_dir=str(root))
    template = tfds.core.ShardedFileTemplate(data_dir=builder.data_path, dataset_name=builder.name,
                                             template="{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}",
                                             filetype_suffix="tfrecord")
    builder.info.set_splits(tfds.core.SplitDict([
        tfds.core.SplitInfo(name=name, shard_lengths=[n], num_bytes=0,
                            filename_template=template.replace(split=name))
        for name, n in sizes.items()]))
    Path(builder.data_dir).mkdir(parents=True, exist_ok=True)
    builder.info.write_to_directory(builder.data_dir)
    return Path(builder.data_dir)


CALTECH = VtabTaskSpec("caltech101", "natural", "caltech101:3.*.*", 102,
                       "train[:800]", "train[2754:2954]", "test")
NORB = VtabTaskSpec("smallnorb(predicted_attribute='label_azimuth')", "structured", "smallnorb:2.*.*", 18,
                    "train[:800]", "test[:200]", "test[50%:]", label_fn=lambda x: x["label_azimuth"])


def label_mod(num_classes: int):
    """fixup giving example i the label i % num_classes."""
    def fixup(name, i, ex):
        ex["label"] = np.int64(i % num_classes)
        return ex
    return fixup


# -- pure rules ---------------------------------------------------------------

def test_split_tfds_name_and_versions():
    assert vtab.split_tfds_name("eurosat/rgb:2.*.*") == ("eurosat/rgb", "2.*.*")
    assert vtab.split_tfds_name("mini_digits") == ("mini_digits", None)
    assert vtab.version_matches("3.1.0", "3.*.*")
    assert vtab.version_matches("2.0.1", "2.0.1")
    assert not vtab.version_matches("2.0.0", "3.*.*")
    assert not vtab.version_matches("2.0.0", "2.0.1")
    assert vtab.version_matches("7.0.0", None)


@pytest.mark.parametrize("split, n, expected", [
    ("train[:800]", 3060, ("train", 0, 800)),
    ("train[63000:63200]", 70000, ("train", 63000, 63200)),
    ("train[21600:]", 27000, ("train", 21600, 27000)),
    ("test[50%:]", 24300, ("test", 12150, 24300)),
    ("test", 711, ("test", 0, 711)),
    ("validation[:200]", 100, ("validation", 0, 100)),  # TFDS clips to the split
    ("train[-10:]", 100, ("train", 90, 100)),
    ("test[50%:]", None, ("test", None, None)),
    ("train[2754:2954]", None, ("train", 2754, 2954)),
])
def test_slice_range(split, n, expected):
    assert vtab.slice_range(split, n) == expected


def test_slice_size_and_bad_split():
    assert vtab.slice_size("test[50%:]", 24300) == 12150
    assert vtab.slice_size("train[589824:590024]", 737280) == 200
    assert vtab.slice_size("train[663552:]", 737280) == 73728
    with pytest.raises(ConfigError, match="train\\[1:2:3\\]"):
        vtab.slice_range("train[1:2:3]", 10)


def test_overlapping_slices():
    spec = VtabTaskSpec("t", "natural", "x:1.*.*", 2, "train[:800]", "train[63000:63200]", "validation")
    assert vtab.overlapping_slices(spec, {"train": 70000, "validation": 15000}) == []
    leaky = VtabTaskSpec("t", "natural", "x:1.*.*", 2, "train[:800]", "train[700:900]", "train[850:]")
    assert vtab.overlapping_slices(leaky, {"train": 1000}) == [("train800", "val200"), ("val200", "test")]
    norb = VtabTaskSpec("t", "natural", "x:1.*.*", 2, "train[:800]", "test[:200]", "test[50%:]")
    assert vtab.overlapping_slices(norb, {"train": 24300, "test": 24300}) == []
    assert vtab.overlapping_slices(norb, {"train": 24300, "test": 300}) == [("val200", "test")]
    assert vtab.overlapping_slices(norb, {}) == []           # unknown sizes: undecidable, skipped


def test_overlapping_spec_is_refused(tmp_path):
    leaky = VtabTaskSpec("leaky", "natural", "caltech101:3.*.*", 102, "train[:800]", "train[2754:2954]",
                         "train[2900:]")
    write_prepared(tmp_path, "caltech101:3.*.*", {"train": 3060, "test": 6084})
    fake = FakeTfds(num_examples=3, fixup=label_mod(102))
    with tfds.testing.mock_data(data_dir=str(tmp_path), as_dataset_fn=lambda b, **kw: fake.read(b, **kw)), \
            pytest.raises(ConfigError, match="val200 and test slices overlap"):
        vtab.vtab_task(leaky, data_dir=tmp_path, image_size=8)
    assert fake.calls == []                                    # refused before reading anything


def test_prepared_versions_needs_dataset_info(tmp_path):
    (tmp_path / "clevr" / "3.1.0").mkdir(parents=True)
    (tmp_path / "clevr" / "3.1.0" / "dataset_info.json").write_text("{}")
    (tmp_path / "clevr" / "2.0.0").mkdir()            # incomplete: no dataset_info.json
    (tmp_path / "clevr" / "incomplete.3.2.0").mkdir()
    assert vtab.prepared_versions(tmp_path, "clevr") == ["3.1.0"]
    assert vtab.prepared_versions(tmp_path, "kitti") == []


# -- errors --------------------------------------------------------------------

def test_missing_dataset_names_dataset_dir_and_command(tmp_path):
    with pytest.raises(DataError) as err:
        vtab.vtab_task(CALTECH, data_dir=tmp_path, image_size=8)
    message = str(err.value)
    assert "caltech101" in message and str(tmp_path) in message
    assert f"fewshot-bench prepare vtab --data_dir {tmp_path}" in message


def test_version_mismatch_names_both_versions(tmp_path):
    folder = tmp_path / "caltech101" / "2.0.0"
    folder.mkdir(parents=True)
    (folder / "dataset_info.json").write_text("{}")
    with pytest.raises(DataError, match=r"version\(s\) 2\.0\.0 but the task expects version 3\.\*\.\*"):
        vtab.vtab_task(CALTECH, data_dir=tmp_path, image_size=8)


def test_label_out_of_range_is_a_data_error(tmp_path):
    spec = VtabTaskSpec("toy", "natural", "caltech101:3.*.*", 3, "train[:800]", "train[800:1000]", "test")
    fake = FakeTfds(num_examples=6, fixup=label_mod(5))
    with fake.mock(), pytest.raises(DataError, match="outside 0..2"):
        vtab.vtab_task(spec, data_dir=make_data_dir(tmp_path, [spec]), image_size=8)


# -- the task ------------------------------------------------------------------

def test_vtab_task_support_validation_and_query(tmp_path):
    fake = FakeTfds(num_examples=10, fixup=label_mod(102))
    with fake.mock():
        task = vtab.vtab_task(CALTECH, data_dir=make_data_dir(tmp_path, [CALTECH]), image_size=16,
                              seed=3, query_batch_size=4)
        # building the task reads train800 then val200, never the test split
        assert fake.splits("caltech101") == ["train[:800]", "train[2754:2954]"]
        batches = list(task.query)
        assert fake.splits("caltech101")[2:] == ["test"]
        again = list(task.query)

    assert (task.task_id, task.source, task.group, task.suite, task.seed, task.num_classes) == \
        ("caltech101", "caltech101", "natural", "vtab-1k", 3, 102)
    support = task.support
    assert support.images.shape == (20, 16, 16, 3) and support.images.dtype == np.float32
    assert 0.0 <= support.images.min() and support.images.max() <= 1.0
    assert support.labels.tolist() == list(range(10)) * 2
    assert support.ids[:2] == ("caltech101/train/0", "caltech101/train/1")
    assert support.ids[10:12] == ("caltech101/train/2754", "caltech101/train/2755")
    assert len(set(support.ids)) == 20
    # validation: train800 -> val200, both views of the support set
    assert task.validation.train.ids == support.ids[:10]
    assert task.validation.val.ids == support.ids[10:]
    np.testing.assert_array_equal(task.validation.val.images, support.images[10:])
    assert np.shares_memory(task.validation.train.images, support.images)   # views, not copies
    # query: streamed in chunks of 4, re-iterable, ids disjoint from the support
    assert [len(b) for b in batches] == [4, 4, 2]
    assert [b.ids for b in batches] == [b.ids for b in again]
    query_ids = [i for b in batches for i in b.ids]
    assert query_ids[0] == "caltech101/test/0" and not set(query_ids) & set(support.ids)
    assert all(b.images.shape[1:] == (16, 16, 3) for b in batches)


def test_query_accuracy_is_pooled_over_chunks(tmp_path):
    # labels of the 10 test examples: 0 1 2 3 4 0 1 2 3 4, chunks of 4: [0 1 2 3] [4 0 1 2] [3 4]
    fake = FakeTfds(num_examples=10, fixup=label_mod(5))
    spec = VtabTaskSpec("toy5", "natural", "caltech101:3.*.*", 5, "train[:800]", "train[800:1000]", "test")
    with fake.mock():
        task = vtab.vtab_task(spec, data_dir=make_data_dir(tmp_path, [spec]), image_size=8,
                              query_batch_size=4)
        correct, total = [], []
        for batch in task.query:          # a predictor that always answers class 0
            correct.append(int((batch.labels == 0).sum()))
            total.append(len(batch))
    assert (correct, total) == ([1, 1, 0], [4, 4, 2])
    assert pooled_accuracy(correct, total) == pytest.approx(2 / 10)   # not (1/4 + 1/4 + 0/2) / 3


def test_grayscale_is_tiled_and_label_fn_applies(tmp_path):
    def fixup(name, i, ex):
        ex["label_azimuth"] = np.int64(17 - i)
        return ex

    fake = FakeTfds(num_examples=3, fixup=fixup)
    with fake.mock():
        task = vtab.vtab_task(NORB, data_dir=make_data_dir(tmp_path, [NORB]), image_size=12)
        query = list(task.query)
    assert fake.splits("smallnorb") == ["train[:800]", "test[:200]", "test[50%:]"]
    images = task.support.images
    assert images.shape == (6, 12, 12, 3)
    np.testing.assert_array_equal(images[..., 0], images[..., 1])
    np.testing.assert_array_equal(images[..., 0], images[..., 2])
    assert task.support.labels.tolist() == [17, 16, 15] * 2
    # split sizes are unknown to the mock, so the percent slice keeps its split string in ids
    assert query[0].ids == ("smallnorb/test[50%:]/0", "smallnorb/test[50%:]/1", "smallnorb/test[50%:]/2")
    assert task.support.ids[3] == "smallnorb/test/0"


def test_resize_is_bilinear_without_crop():
    from fewshot_bench.datasets.preprocess import to_unit_rgb

    image = np.zeros((4, 2, 1), np.uint8)
    image[:, 1] = 255                       # columns: black, white
    out = to_unit_rgb(tf.constant(image), 4).numpy()
    assert out.shape == (4, 4, 3)
    # bilinear with half-pixel centres samples x = -0.25, 0.25, 0.75, 1.25 (clamped);
    # nearest would give 0 0 1 1, a central crop would lose the end columns
    np.testing.assert_allclose(out[0, :, 0], [0.0, 0.25, 0.75, 1.0])
    binary = to_unit_rgb(tf.constant(np.ones((3, 3, 1), np.uint8)), 3, max_value=1.0).numpy()
    np.testing.assert_allclose(binary, 1.0)


def test_vtab_source(tmp_path):
    fake = FakeTfds(num_examples=4, fixup=label_mod(102))
    source = vtab.vtab_source(CALTECH, data_dir=make_data_dir(tmp_path, [CALTECH]), suite="vtab-v2",
                              query_batch_size=3)
    assert (source.name, source.group, source.scoring, source.num_tasks, source.benchmark) == \
        ("caltech101", "natural", POOLED, 1, "vtab")
    with fake.mock():
        task = source.build(0, 7, 8)
        assert [len(b) for b in task.query] == [3, 1]
    assert (task.suite, task.seed, task.support.images.shape) == ("vtab-v2", 7, (8, 8, 8, 3))
    with pytest.raises(ConfigError, match="index 1"):
        source.build(1, 0, 8)


def test_known_split_sizes_give_absolute_ids_and_query_size(tmp_path):
    write_prepared(tmp_path, "smallnorb:2.*.*", {"train": 24300, "test": 24300})
    fake = FakeTfds(num_examples=3, fixup=lambda name, i, ex: {**ex, "label_azimuth": np.int64(i)})
    with tfds.testing.mock_data(data_dir=str(tmp_path), as_dataset_fn=lambda b, **kw: fake.read(b, **kw)):
        task = vtab.vtab_task(NORB, data_dir=tmp_path, image_size=8)
        query = list(task.query)
    assert task.query.size == 12150
    assert query[0].ids == ("smallnorb/test/12150", "smallnorb/test/12151", "smallnorb/test/12152")
    assert task.support.ids[3:] == ("smallnorb/test/0", "smallnorb/test/1", "smallnorb/test/2")


def test_slice_beyond_the_split_is_a_data_error(tmp_path):
    write_prepared(tmp_path, "caltech101:3.*.*", {"train": 2000, "test": 6084})   # val200 needs 2954
    fake = FakeTfds(num_examples=3, fixup=label_mod(102))
    with tfds.testing.mock_data(data_dir=str(tmp_path), as_dataset_fn=lambda b, **kw: fake.read(b, **kw)), \
            pytest.raises(DataError, match=r"train\[2754:2954\].*2000"):
        vtab.vtab_task(CALTECH, data_dir=tmp_path, image_size=8)


class VtabToy(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A real (tiny) TFDS dataset: example i of split s has every pixel = base[s] + i and label i % 3."""

    VERSION = tfds.core.Version("1.2.0")
    BASE = {"train": 0, "test": 100}
    SIZES = {"train": 20, "test": 6}

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(5, 7, 1)), "label": tfds.features.ClassLabel(num_classes=3)}))

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(split) for split in self.SIZES}

    def _generate_examples(self, split):
        for i in range(self.SIZES[split]):
            yield i, {"image": np.full((5, 7, 1), self.BASE[split] + i, np.uint8), "label": i % 3}


def test_real_tfds_reading_without_mock(tmp_path):
    VtabToy(data_dir=str(tmp_path)).download_and_prepare()
    stored = {split: [int(ex["image"][0, 0, 0]) for ex in tfds.as_numpy(
        tfds.builder("vtab_toy:1.2.0", data_dir=str(tmp_path)).as_dataset(split=split, shuffle_files=False))]
        for split in ("train", "test")}       # TFDS stores examples in its own (hashed) order
    assert sorted(stored["train"]) == list(range(20))
    spec = VtabTaskSpec("toy", "structured", "vtab_toy:1.*.*", 3, "train[:4]", "train[10:12]", "test[50%:]")
    task = vtab.vtab_task(spec, data_dir=tmp_path, image_size=4, query_batch_size=2)
    pixels = np.rint(task.support.images[:, 0, 0, 0] * 255).astype(int).tolist()
    assert pixels == stored["train"][:4] + stored["train"][10:12]       # exactly the slices, in order
    assert task.support.labels.tolist() == [p % 3 for p in pixels]
    assert task.support.ids == ("vtab_toy/train/0", "vtab_toy/train/1", "vtab_toy/train/2", "vtab_toy/train/3",
                                "vtab_toy/train/10", "vtab_toy/train/11")
    chunks = list(task.query)
    assert task.query.size == 3 and [len(c) for c in chunks] == [2, 1]
    query_pixels = [np.rint(c.images[:, 0, 0, 0] * 255).astype(int).tolist() for c in chunks]
    assert query_pixels == [stored["test"][3:5], stored["test"][5:]]
    assert [c.labels.tolist() for c in chunks] == [[(p - 100) % 3 for p in q] for q in query_pixels]
    assert [c.ids for c in chunks] == [("vtab_toy/test/3", "vtab_toy/test/4"), ("vtab_toy/test/5",)]
    assert task.support.images.shape == (6, 4, 4, 3)
    np.testing.assert_allclose(task.support.images[0], pixels[0] / 255, atol=1e-6)  # constant, tiled
    # the stored images are 5x7; the task info keeps that area, not the 4x4 the learner gets
    assert task.info == TaskInfo("toy", "vtab", 35.0)


def test_task_info_has_the_median_area_before_the_resize(tmp_path):
    # example i of each slice (10 in train800, 10 in val200) is (10 + i) x 20: areas 200..380 twice,
    # median (280 + 300) / 2 = 290; the learner gets 8x8 images
    def fixup(name, i, ex):
        ex["label"] = np.int64(i % 3)
        ex["image"] = np.zeros((10 + i, 20, 3), np.uint8)
        return ex

    spec = VtabTaskSpec("mini_dsprites_orientation", "structured", "caltech101:3.*.*", 3, "train[:800]",
                        "train[800:1000]", "test")
    with FakeTfds(num_examples=10, fixup=fixup).mock():
        task = vtab.vtab_task(spec, data_dir=make_data_dir(tmp_path, [spec]), image_size=8)
    assert task.support.images.shape == (20, 8, 8, 3)
    assert task.info == TaskInfo("mini_dsprites_orientation", "vtab", 290.0)
