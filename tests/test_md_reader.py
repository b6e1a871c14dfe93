"""Reading Meta-Dataset records in the reference layout, episodes as Tasks, and bad inputs."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from fewshot_bench.datasets.meta_dataset import EpisodeConfig, SourceReader, md_source, parse_image_id
from fewshot_bench.datasets.meta_dataset.episodes import EpisodeLayout, layout_fingerprint
from fewshot_bench.datasets.meta_dataset.reader import decode_image, decode_sized, index_records
from fewshot_bench.datasets.meta_dataset.writer import (encode_png, example_bytes, write_class, write_flat_spec,
                                                        write_synthetic_source, write_tfrecords)
from fewshot_bench.errors import ConfigError, DataError
from fewshot_bench.tasks import EPISODES, TaskInfo, fingerprint

COUNTS = {0: 12, 1: 12, 2: 6, 3: 12, 4: 10, 5: 12, 6: 12, 7: 12, 8: 14}  # 2 train, 1 valid, 6 test


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("md_records")
    write_synthetic_source(root / "toy", "toy", {"train": 2, "valid": 1, "test": 6}, COUNTS, image_size=8)
    return root


def copy_source(root, tmp_path):
    shutil.copytree(root / "toy", tmp_path / "toy")
    return tmp_path


def test_index_matches_tfrecord_dataset(root):
    import tensorflow as tf

    path = root / "toy" / "4.tfrecords"
    offsets, lengths = index_records(path)
    assert len(offsets) == 10
    expected = [r.numpy() for r in tf.data.TFRecordDataset(str(path))]
    assert SourceReader(root / "toy").read_raw(4, range(10)) == expected


def test_read_images_returns_the_requested_records(root):
    images = SourceReader(root / "toy").read_images(5, [3, 0, 11], image_size=5)
    assert images.shape == (3, 5, 5, 3) and images.dtype == np.float32
    np.testing.assert_allclose(images[:, 0, 0], [[5 / 255, 3 / 255, 7 / 255], [5 / 255, 0, 7 / 255],
                                                 [5 / 255, 11 / 255, 7 / 255]], atol=1e-6)


def test_decode_is_bilinear_with_aligned_corners_and_tiles_grayscale():
    gray = encode_png(np.array([[0, 255], [255, 0]], np.uint8))
    image = decode_image(gray, 3, "test")
    # corners kept; edge midpoints and centre are averages: 127.5 / 255 = 0.5
    expected = np.array([[0, 0.5, 1], [0.5, 0.5, 0.5], [1, 0.5, 0]], np.float32)
    for channel in range(3):
        np.testing.assert_allclose(image[..., channel], expected, atol=1e-6)
    resized, size = decode_sized(encode_png(np.zeros((2, 5), np.uint8)), 3, "test")
    assert resized.shape == (3, 3, 3) and size == (2, 5)


def test_episode_info_has_the_median_support_area_before_the_resize(tmp_path):
    from fewshot_bench.datasets.meta_dataset.episodes import layout_task

    # record r of each class is (4 + r) x 10 pixels
    for c in (0, 1):
        write_class(tmp_path / "sizes", c, [encode_png(np.zeros((4 + r, 10), np.uint8)) for r in range(6)])
    write_flat_spec(tmp_path / "sizes", "sizes", {"train": 0, "valid": 0, "test": 2}, {0: 6, 1: 6})
    # support records: class 0 -> 0, 2; class 1 -> 5: areas 40, 60, 90, median 60 (the query's 50 is not counted)
    layout = EpisodeLayout(support=((0, 0, 0), (0, 2, 0), (1, 5, 1)), query=((0, 1, 0),))
    task = layout_task(SourceReader(tmp_path / "sizes"), "sizes", layout, 2, image_size=4, task_id="0", seed=0,
                       suite="s", group="g", query_batch_size=10)
    assert task.support.images.shape == (3, 4, 4, 3)
    assert task.info == TaskInfo("sizes", "md", 60.0)


def test_dumped_episodes_keep_the_original_area(root, tmp_path):
    from fewshot_bench.datasets.meta_dataset.manifest import dump_episodes, dumped_source

    dump = dump_episodes(tmp_path / "dump", root, "toy", "test", seed=0, indices=[0])
    assert dumped_source(dump).build(0, 0, 5).info == TaskInfo("toy", "md", 64.0)


def test_md_source_builds_episode_tasks(root):
    source = md_source(root, "toy", num_episodes=4, suite="md-test", query_batch_size=7)
    assert (source.name, source.scoring, source.benchmark, source.num_tasks) == ("toy", EPISODES, "md", 4)
    task = source.build(2, 11, 6)
    assert task.task_id == "2" and task.seed == 11 and task.suite == "md-test" and task.validation is None
    assert task.support.images.shape[1:] == (6, 6, 3)
    assert task.info == TaskInfo("toy", "md", 64.0)  # the records hold 8x8 images
    labels = task.support.labels
    assert sorted(set(labels.tolist())) == list(range(task.num_classes)) and 5 <= task.num_classes <= 6
    batches = list(task.query)
    assert all(len(b) <= 7 for b in batches) and sum(len(b) for b in batches) == task.query.size
    query_ids = [i for b in batches for i in b.ids]
    all_ids = list(task.support.ids) + query_ids
    assert len(set(all_ids)) == len(all_ids), "an image appears twice in one episode"
    # every image's pixels are the record its id names, and every label maps to one class
    class_of_label = {}
    for part in [task.support] + batches:
        for image, label, image_id in zip(part.images, part.labels, part.ids):
            name, class_id, record = parse_image_id(image_id)
            assert name == "toy" and class_id in range(3, 9)
            np.testing.assert_allclose(image[0, 0, :2] * 255, [class_id, record], atol=1e-3)
            assert class_of_label.setdefault(int(label), class_id) == class_id
    assert len(set(class_of_label.values())) == task.num_classes
    again = source.build(2, 11, 6)
    assert fingerprint(task.support, task.query) == fingerprint(again.support, again.query)
    other = source.build(3, 11, 6)
    assert fingerprint(task.support, task.query) != fingerprint(other.support, other.query)


def test_episodes_are_lazy_and_fingerprints_unchanged(root):
    source = md_source(root, "toy", num_episodes=4, query_batch_size=7)
    task = source.build(1, 11, 6)
    batches = list(task.query)
    assert not any(part.decoded for part in [task.support] + batches)
    # digest pinned from the eager reader (fingerprints hash ids and labels, in roles and order)
    assert fingerprint(task.support, batches) == "e49be94a5994f336"
    reader = SourceReader(root / "toy")
    for part in [task.support] + batches:  # bit for bit what the eager read gave
        want = np.concatenate([reader.read_images(c, [r], 6) for _, c, r in map(parse_image_id, part.ids)])
        np.testing.assert_array_equal(part.images, want)


def test_md_episode_on_a_warm_feature_cache_decodes_no_image(root, tmp_path, monkeypatch):
    from fewshot_bench.backbones.features import FeatureExtractor
    from fewshot_bench.datasets.meta_dataset import reader as reader_module
    from fewshot_bench.learners.linear_probe import LinearProbe
    from fewshot_bench.tasks import Examples
    from fewshot_bench.testing import tiny_backbone

    decoded = []
    decode = reader_module.decode_sized
    monkeypatch.setattr(reader_module, "decode_sized",
                        lambda data, size, where: decoded.append(where) or decode(data, size, where))
    source, backbone = md_source(root, "toy", num_episodes=4, query_batch_size=7), tiny_backbone(6)

    def evaluate(support, query, cache_dir):
        extractor = FeatureExtractor(backbone, cache_dir=cache_dir)
        predictor = LinearProbe(extractor=extractor).fit(support, 6)
        logits = [predictor.predict(batch.unlabelled()) for batch in query]
        extractor.flush()
        return extractor.extract(support), logits

    task = source.build(1, 11, 6)  # 6 ways, 46 images
    cold = evaluate(task.support, task.query, tmp_path)
    assert len(decoded) == 46 and len(set(decoded)) == 46  # each image decoded once
    decoded.clear()
    again = source.build(1, 11, 6)
    warm = evaluate(again.support, again.query, tmp_path)
    assert decoded == [] and not again.support.decoded
    # the eager path: every image decoded up front, features computed in memory
    eager = evaluate(Examples(task.support.images, task.support.labels, task.support.ids),
                     [Examples(b.images, b.labels, b.ids) for b in task.query], None)
    for got in (warm, cold):
        np.testing.assert_array_equal(got[0], eager[0])
        for a, b in zip(got[1], eager[1], strict=True):
            np.testing.assert_array_equal(a, b)


def test_header_size_is_the_decoded_size():
    import tensorflow as tf

    from fewshot_bench.datasets.meta_dataset.reader import header_size

    gray = np.zeros((5, 9), np.uint8)
    for data in (encode_png(gray), tf.io.encode_jpeg(np.zeros((7, 3, 3), np.uint8)).numpy(),
                 tf.io.encode_png(np.zeros((4, 6, 4), np.uint8)).numpy()):
        assert header_size(data, "test") == decode_sized(data, 2, "test")[1]
    assert header_size(encode_png(gray), "test") == (5, 9)
    with pytest.raises(DataError, match="where: the image does not decode"):
        header_size(b"not an image", "where")


def test_reader_indexes_only_the_classes_an_episode_uses(root):
    from fewshot_bench.datasets.meta_dataset.episodes import layout_task
    from fewshot_bench.datasets.meta_dataset.sampler import EpisodeSampler

    reader = SourceReader(root / "toy")
    episode = EpisodeSampler(reader.spec, "test", EpisodeConfig.fixed(5, 1, 2)).episode(0, 0)
    layout = EpisodeLayout.of(episode)
    task = layout_task(reader, "toy", layout, 5, image_size=4, task_id="0", seed=0, suite="s", group="g",
                       query_batch_size=100)
    assert reader.indexed_classes == 5
    assert layout_fingerprint("toy", layout) == fingerprint(task.support, task.query)


def test_fixed_way_shot_source_too_small(root):
    source = md_source(root, "toy", episode_config=EpisodeConfig.fixed(5, 5, 15))
    with pytest.raises(ConfigError, match="source 'toy', split test: classes 3 .* min_examples_in_class=20"):
        source.build(0, 0, 8)
    with pytest.raises(ConfigError, match="has 1 usable classes"):
        md_source(root, "toy", split="valid", episode_config=EpisodeConfig.fixed(5, 1, 1)).build(0, 0, 8)


def test_missing_class_file(root, tmp_path):
    root = copy_source(root, tmp_path)
    (root / "toy" / "4.tfrecords").unlink()
    reader = SourceReader(root / "toy")
    with pytest.raises(DataError, match=r"source 'toy' class 4 \(.*4.tfrecords\): the class file is missing"):
        reader.read_images(4, [0], 8)


def test_truncated_file(root, tmp_path):
    root = copy_source(root, tmp_path)
    path = root / "toy" / "5.tfrecords"
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(DataError, match=r"source 'toy' class 5: .*5.tfrecords is truncated: record 11"):
        SourceReader(root / "toy").read_images(5, [0], 8)


def test_spec_count_disagrees_with_records(root, tmp_path):
    root = copy_source(root, tmp_path)
    write_class(root / "toy", 6, [encode_png(np.zeros((4, 4), np.uint8))] * 3)
    with pytest.raises(DataError, match=r"class 6 .* holds 3 records but the spec .* says 12"):
        SourceReader(root / "toy").read_images(6, [0], 8)


def test_image_that_fails_to_decode_and_corrupt_record(root, tmp_path):
    root = copy_source(root, tmp_path)
    records = [example_bytes(encode_png(np.zeros((4, 4), np.uint8)), 7) for _ in range(11)]
    write_tfrecords(root / "toy" / "7.tfrecords", records + [example_bytes(b"not an image", 7)])
    reader = SourceReader(root / "toy")
    assert reader.read_images(7, [0, 10], 4).shape == (2, 4, 4, 3)
    with pytest.raises(DataError, match=r"class 7 \(.*7.tfrecords\) record 11: the image does not decode"):
        reader.read_images(7, [11], 4)
    write_tfrecords(root / "toy" / "8.tfrecords", [b"\xff\x00garbage"] * 14)
    with pytest.raises(DataError, match=r"class 8 \(.*8.tfrecords\) record 0 is not a tf.train.Example"):
        SourceReader(root / "toy").read_images(8, [0], 4)


def test_label_that_is_not_the_class(root, tmp_path):
    root = copy_source(root, tmp_path)
    write_tfrecords(root / "toy" / "3.tfrecords", [example_bytes(encode_png(np.zeros((4, 4), np.uint8)), 4)] * 12)
    with pytest.raises(DataError, match="record 0 has label 4, not its class id 3"):
        SourceReader(root / "toy").read_images(3, [0], 4)


def write_json_spec(records_dir, data):
    import json

    records_dir.mkdir(parents=True, exist_ok=True)
    (records_dir / "dataset_spec.json").write_text(json.dumps(data))


def test_hierarchical_source_episodes_stay_under_one_node(tmp_path):
    def node(wn, children):
        return {"wn_id": wn, "words": wn, "children_ids": children, "parents_ids": []}

    leaves = {"train": [f"a{i}" for i in range(5)], "valid": [f"b{i}" for i in range(5)],
              "test": [f"t{i}" for i in range(7)]}
    graphs = {"TRAIN": [node("ra", leaves["train"])] + [node(w, []) for w in leaves["train"]],
              "VALID": [node("rb", leaves["valid"])] + [node(w, []) for w in leaves["valid"]],
              # n1 spans t0..t4 (eligible), n2 spans t4..t6 (3 leaves: too few), the root all 7
              "TEST": [node("rt", ["n1", "n2"]), node("n1", leaves["test"][:5]), node("n2", leaves["test"][4:])]
                      + [node(w, []) for w in leaves["test"]]}
    wn_ids = leaves["train"] + leaves["valid"] + leaves["test"]
    counts = {split.upper(): {w: 4 for w in leaves[split]} for split in leaves}
    write_json_spec(tmp_path / "tiny_imagenet", {
        "name": "tiny_imagenet", "__class__": "HierarchicalDatasetSpecification", "split_subgraphs": graphs,
        "images_per_class": counts, "class_names": {str(i): w for i, w in enumerate(wn_ids)},
        "file_pattern": "{}.tfrecords"})
    for class_id in range(10, 17):
        write_class(tmp_path / "tiny_imagenet", class_id, [encode_png(np.full((4, 4), class_id, np.uint8))] * 4)
    source = md_source(tmp_path, "tiny_imagenet")
    seen = set()
    for index in range(30):
        task = source.build(index, 0, 4)
        classes = {parse_image_id(i)[1] for i in task.support.ids}
        assert classes in ({10, 11, 12, 13, 14}, set(range(10, 17))), classes
        assert len(classes) == task.num_classes
        seen.add(frozenset(classes))
        assert task.support.images[0, 0, 0, 0] * 255 == pytest.approx(parse_image_id(task.support.ids[0])[1])
    assert len(seen) == 2, "both eligible nodes are chosen"


def test_bilevel_source_episodes_stay_in_one_superclass(tmp_path):
    write_json_spec(tmp_path / "tiny_omniglot", {
        "name": "tiny_omniglot", "__class__": "BiLevelDatasetSpecification",
        "superclasses_per_split": {"TRAIN": 1, "VALID": 0, "TEST": 2},
        "classes_per_superclass": {"0": 5, "1": 5, "2": 6},
        "images_per_class": {str(c): 4 for c in range(16)}, "file_pattern": "{}.tfrecords"})
    for class_id in range(5, 16):
        write_class(tmp_path / "tiny_omniglot", class_id, [encode_png(np.zeros((4, 4), np.uint8))] * 4)
    source = md_source(tmp_path, "tiny_omniglot")
    alphabets = set()
    for index in range(30):
        classes = {parse_image_id(i)[1] for i in source.build(index, 0, 4).support.ids}
        assert classes <= set(range(5, 10)) or classes <= set(range(10, 16)), classes
        alphabets.add(min(classes) >= 10)
    assert alphabets == {True, False}
