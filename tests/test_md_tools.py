"""Episode descriptions, the consistency check, manifests, dumps, batch reading and the gin presets."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from fewshot_bench.datasets.meta_dataset import md_source
from fewshot_bench.datasets.meta_dataset.batch import locate, split_batches
from fewshot_bench.datasets.meta_dataset.describe import check_source, describe_episodes
from fewshot_bench.datasets.meta_dataset.manifest import (dump_episodes, dumped_source, manifest_source,
                                                          read_manifest, write_manifest)
from fewshot_bench.datasets.meta_dataset.sampler import EpisodeSampler
from fewshot_bench.datasets.meta_dataset.spec import load_spec
from fewshot_bench.datasets.meta_dataset.writer import (encode_png, example_bytes, write_class,
                                                        write_synthetic_source, write_tfrecords)
from fewshot_bench.errors import ConfigError, DataError
from fewshot_bench.tasks import fingerprint

REPO = Path(__file__).resolve().parents[1]
SPECS = REPO.parent / "shared" / "meta_dataset" / "dataset_specs"
COUNTS = {0: 9, 1: 7, 2: 8, 3: 12, 4: 10, 5: 12, 6: 11, 7: 12, 8: 14}  # 2 train, 1 valid, 6 test


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("md_tools")
    write_synthetic_source(root / "toy", "toy", {"train": 2, "valid": 1, "test": 6}, COUNTS, image_size=6)
    return root


def test_describe_from_a_reference_spec():
    spec_path = SPECS / "ilsvrc_2012_dataset_spec.json"
    spec = load_spec(spec_path)
    descriptions = list(describe_episodes(spec_path, split="test", num=5, seed=3))
    sampler = EpisodeSampler(spec, "test")
    for index, d in enumerate(descriptions):
        assert set(d) == {"classes", "shots", "query"}
        episode = sampler.episode(3, index)
        assert d["classes"] == [c - 870 for c in episode.classes]    # test classes start at id 870
        assert all(0 <= c < 130 for c in d["classes"])
        assert d["shots"] == list(episode.shots) and d["query"] == list(episode.query)
        json.dumps(d)
    assert list(describe_episodes(spec_path, split="test", num=2, seed=3, start=3)) == descriptions[3:5]


def test_describe_real_episodes_carries_the_task_fingerprint(root):
    descriptions = list(describe_episodes(records_root=root, source="toy", split="test", num=3, seed=1))
    source = md_source(root, "toy")
    for index, d in enumerate(descriptions):
        task = source.build(index, 1, 4)
        assert d["fingerprint"] == fingerprint(task.support, task.query)
        assert len(d["classes"]) == task.num_classes
        assert sum(d["shots"]) == len(task.support)
    with pytest.raises(ConfigError, match="either from --spec"):
        next(describe_episodes(SPECS / "dtd_dataset_spec.json", records_root=root, source="toy"))


def test_check_source_reports_every_problem_at_once(root, tmp_path):
    assert check_source(root, "toy") == []
    shutil.copytree(root / "toy", tmp_path / "toy")
    toy = tmp_path / "toy"
    (toy / "1.tfrecords").unlink()                                              # missing
    (toy / "2.tfrecords").write_bytes((toy / "2.tfrecords").read_bytes()[:-9])  # truncated
    data = bytearray((toy / "3.tfrecords").read_bytes())
    data[40] ^= 0xFF                                                            # CRC no longer matches
    (toy / "3.tfrecords").write_bytes(bytes(data))
    write_class(toy, 4, [encode_png(np.zeros((4, 4), np.uint8))] * 3)           # count disagrees with spec
    png = encode_png(np.zeros((4, 4), np.uint8))
    write_tfrecords(toy / "5.tfrecords", [example_bytes(png, 5)] * 11 + [example_bytes(b"junk", 5)])
    write_class(toy, 42, [png])                                                 # not in the spec
    problems = check_source(tmp_path, "toy")
    text = "\n".join(problems)
    assert "class 1 (" in text and "the class file is missing" in text
    assert "class 2: " in text and "is truncated" in text
    assert "class 3 (" in text and "is corrupt" in text
    assert "class 4 (" in text and "holds 3 records but the spec" in text and "says 10" in text
    assert "class 5 (" in text and "record 11: the image does not decode" in text
    assert "42.tfrecords is not a class of the spec" in text
    assert len(problems) == 6, problems
    assert "no dataset spec" in check_source(tmp_path, "absent")[0]


def test_manifest_replays_episodes_exactly(root, tmp_path):
    path = write_manifest(tmp_path / "m.jsonl", root, "toy", "test", seed=5, indices=[4, 0, 7])
    header, entries = read_manifest(path)
    assert header["source"] == "toy" and [e["index"] for e in entries] == [4, 0, 7]
    original = md_source(root, "toy")
    replay = manifest_source(path, root)
    assert replay.num_tasks == 3
    for position, index in enumerate([4, 0, 7]):
        a, b = original.build(index, 5, 4), replay.build(position, 999, 4)
        assert b.task_id == str(index)
        assert fingerprint(a.support, a.query) == fingerprint(b.support, b.query) == entries[position]["fingerprint"]
        np.testing.assert_array_equal(a.support.images, b.support.images)
    lines = path.read_text().splitlines()
    edited = json.loads(lines[1])
    edited["support"][0] = edited["support"][0][::-1] + [99]
    path.write_text("\n".join([lines[0], json.dumps(edited)] + lines[2:]))
    with pytest.raises(DataError, match="episode 4 does not match its fingerprint"):
        read_manifest(path)


def test_dump_rebuilds_episodes_without_the_source(root, tmp_path):
    shutil.copytree(root / "toy", tmp_path / "src" / "toy")
    dump = dump_episodes(tmp_path / "dump", tmp_path / "src", "toy", "test", seed=2, indices=[1, 3])
    expected = []
    for index in (1, 3):
        task = md_source(tmp_path / "src", "toy").build(index, 2, 5)
        task.support.images  # decode the lazy support now: the source is deleted below
        expected.append((task, fingerprint(task.support, task.query), np.concatenate([b.images for b in task.query])))
    shutil.rmtree(tmp_path / "src")
    source = dumped_source(dump)
    for position, (want, want_fingerprint, want_query) in enumerate(expected):
        got = source.build(position, 0, 5)
        assert got.task_id == want.task_id and got.num_classes == want.num_classes
        assert fingerprint(got.support, got.query) == want_fingerprint
        np.testing.assert_array_equal(got.support.images, want.support.images)
        np.testing.assert_array_equal(np.concatenate([b.images for b in got.query]), want_query)


def test_locate_maps_flat_positions_to_class_and_record():
    classes, records = locate(np.array([0, 2, 3, 7, 8]), np.array([3, 5, 1]))
    assert classes.tolist() == [0, 0, 1, 1, 2] and records.tolist() == [0, 2, 0, 4, 0]


def test_split_batches_visit_every_train_image_once_per_epoch(root):
    batches = list(split_batches(root, "toy", "train", batch_size=5, image_size=4, seed=1, epochs=2))
    assert [len(b) for b in batches] == [5, 5, 5, 1] * 2
    first = [i for b in batches[:4] for i in b.ids]
    second = [i for b in batches[4:] for i in b.ids]
    assert sorted(first) == sorted(second) == sorted(f"toy/{c}/{r}" for c in (0, 1) for r in range(COUNTS[c]))
    assert first != second, "each epoch is shuffled afresh"
    for b in batches:
        for image, label, image_id in zip(b.images, b.labels, b.ids):
            _, class_id, record = image_id.split("/")
            assert label == int(class_id)  # train classes 0, 1 are split indices 0, 1
            np.testing.assert_allclose(image[0, 0, :2] * 255, [int(class_id), int(record)], atol=1e-3)
    valid = list(split_batches(root, "toy", "valid", batch_size=100, image_size=4, shuffle=False))
    assert valid[0].ids == tuple(f"toy/2/{r}" for r in range(8)) and set(valid[0].labels) == {0}


def test_gin_presets_build_the_protocol_suites(monkeypatch):
    import gin

    from fewshot_bench.datasets.meta_dataset.protocol import MD_V1_TEST_SOURCES, MD_V2_TEST_SOURCES, md_suite

    monkeypatch.chdir(REPO)
    try:
        gin.clear_config()
        gin.parse_config_file("gin/suites/md_v2.gin")
        v2 = md_suite("/records")
        assert v2.name == "md-v2" and tuple(s.name for s in v2.sources) == MD_V2_TEST_SOURCES
        assert "ilsvrc_2012" not in MD_V2_TEST_SOURCES and "vgg_flower" not in MD_V2_TEST_SOURCES
        assert all(s.num_tasks == 600 and s.benchmark == "md" for s in v2.sources)
        gin.clear_config()
        gin.parse_config_file("gin/suites/md_v1.gin")
        v1 = md_suite("/records")
        assert v1.name == "md-v1" and tuple(s.name for s in v1.sources) == MD_V1_TEST_SOURCES
        assert len(MD_V1_TEST_SOURCES) == 10
    finally:
        gin.clear_config()
    with pytest.raises(ConfigError, match="needs the Meta-Dataset records root"):
        md_suite("")
