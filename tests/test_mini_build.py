"""The mini suite builder: deterministic bytes, real on-disk formats, manifest checks."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from data_prep import md_records, mini, mini_glyphs, mini_images, mini_sprites
from fewshot_bench.errors import ConfigError, DataError

# Key order of the reference dataset_spec.json files (dtd / omniglot in Meta-Dataset).
FLAT_KEYS = ["name", "classes_per_split", "images_per_class", "class_names", "path",
             "file_pattern", "__class__"]
BILEVEL_KEYS = ["name", "superclasses_per_split", "classes_per_superclass", "images_per_class",
                "superclass_names", "class_names", "path", "file_pattern", "__class__"]


@pytest.fixture(scope="module")
def builds(tmp_path_factory) -> dict[str, Path]:
    """Two builds with seed 0 and one with seed 1 (built once for the module).

    Build "b" runs in a fresh process: some non-determinism (protobuf map
    order, hash seeds) only shows between processes.
    """
    base = tmp_path_factory.mktemp("mini")
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")]),
           "PYTHONHASHSEED": "random"}
    subprocess.run([sys.executable, "-m", "data_prep.mini", "--root", str(base / "b"), "--seed", "0"],
                   check=True, cwd=repo, env=env, capture_output=True)
    return {"a": mini.build_mini(base / "a", seed=0), "b": base / "b",
            "seed1": mini.ensure_mini(base / "seed1", seed=1)}  # ensure_mini builds a missing root


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _records(paths: list[Path]) -> list[tuple[np.ndarray, int]]:
    """(image, label) of every tf.train.Example in ``paths``, read in file order.

    TF parses and decodes the first record; the rest are parsed as protos and
    decoded with PIL (one tf.data pipeline for all files keeps this fast).
    """
    raw = [r.numpy() for r in tf.data.TFRecordDataset([str(p) for p in paths])]
    spec = {"image": tf.io.FixedLenFeature([], tf.string), "label": tf.io.FixedLenFeature([], tf.int64)}
    first = tf.io.parse_single_example(raw[0], spec)
    out = [(tf.io.decode_png(first["image"]).numpy(), int(first["label"]))]
    for record in raw[1:]:
        feature = tf.train.Example.FromString(record).features.feature
        assert sorted(feature) == ["image", "label"]
        image = np.asarray(Image.open(io.BytesIO(feature["image"].bytes_list.value[0])))
        out.append((image if image.ndim == 3 else image[..., None], feature["label"].int64_list.value[0]))
    return out

# ---------------------------------------------------------------- determinism and manifest

def test_rebuild_with_same_seed_is_byte_identical(builds):
    a, b = _files(builds["a"]), _files(builds["b"])
    assert sorted(a) == sorted(b)
    differing = [name for name in a if a[name] != b[name]]
    assert differing == []  # every file, dataset_info.json and MANIFEST.json included
    assert any(name.endswith(".tfrecord-00000-of-00001") for name in a)
    assert any(name.endswith("dataset_info.json") for name in a)


def test_other_seed_gives_other_data(builds):
    a, other = _files(builds["a"]), _files(builds["seed1"])
    data = [name for name in a if "tfrecord" in name]
    assert len(data) > 100
    for dataset in mini.TFDS_DATASETS:
        shard = f"tfds/{dataset}/1.0.0/{dataset}-train.tfrecord-00000-of-00001"
        assert a[shard] != other[shard], shard
    changed = [name for name in data if name in other and a[name] != other[name]]
    assert len(changed) == len(data)
    assert json.loads(other["MANIFEST.json"])["seed"] == 1


def test_manifest_lists_every_file_with_its_hash(builds):
    root = builds["a"]
    manifest = mini.read_manifest(root)
    assert manifest["seed"] == 0 and manifest["builder_version"] == mini.BUILDER_VERSION
    assert manifest["packages"]["tensorflow-datasets"] == tfds.__version__
    on_disk = sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                     if p.is_file() and p.name != mini.MANIFEST)
    assert sorted(manifest["files"]) == on_disk
    import hashlib
    for rel in on_disk[:20]:
        assert manifest["files"][rel] == hashlib.sha256((root / rel).read_bytes()).hexdigest()
    assert not (root / "tfds" / "downloads").exists()  # TFDS scratch stays out of the suite
    assert mini.verify_mini(root) == []


def test_build_is_small(builds):
    size = sum(p.stat().st_size for p in builds["a"].rglob("*") if p.is_file())
    assert size < 16_000_000, f"{size} bytes"  # VTAB-style tasks hold train 1000 + test 500


# ---------------------------------------------------------------- TFDS datasets

@pytest.mark.parametrize("name", sorted(mini.TFDS_DATASETS))
def test_tfds_dataset_loads_with_expected_splits_and_shapes(builds, name):
    desc = mini.TFDS_DATASETS[name]
    data_dir = builds["a"] / mini.TFDS_DIR
    builder = tfds.builder(name, data_dir=data_dir)  # what the reader side calls
    assert {s: builder.info.splits[s].num_examples for s in builder.info.splits} == desc.splits
    for split, size in desc.splits.items():
        examples = list(tfds.as_numpy(tfds.load(name, split=split, data_dir=data_dir, download=False)))
        assert len(examples) == size
        images = np.stack([e["image"] for e in examples])
        assert images.dtype == np.uint8 and images.shape[1:] == desc.image_shape
        assert images.max() == 1 if desc.pixel_max == 1 else images.max() > 200
        assert len({img.tobytes() for img in images}) > 0.9 * size  # not one image repeated
        for task in [t for t in mini.VTAB_TASKS if t.dataset == name]:
            labels = np.array([e[task.label_key] for e in examples])
            assert labels.min() >= 0
            if task.label_key == "label":
                assert set(labels.tolist()) == set(range(task.num_classes))


def test_vtab_tasks_cover_three_groups(builds):
    assert len(mini.VTAB_TASKS) >= 4
    assert {t.group for t in mini.VTAB_TASKS} == {"natural", "specialized", "structured"}
    for task in mini.VTAB_TASKS:
        assert task.dataset in mini.TFDS_DATASETS
        feature = tfds.builder(task.dataset, data_dir=builds["a"] / mini.TFDS_DIR).info.features[task.label_key]
        assert feature.num_classes == task.label_classes >= task.num_classes
        assert mini.TFDS_DATASETS[task.dataset].splits["train"] >= 200  # room for train800val200's mini analogue


def test_dsprites_latents_in_range_and_consistent(builds):
    ds = tfds.load("mini_dsprites", split="train", data_dir=builds["a"] / mini.TFDS_DIR, download=False)
    examples = list(tfds.as_numpy(ds))
    for factor, size in mini_sprites.CARDINALITIES.items():
        labels = np.array([e[f"label_{factor}"] for e in examples])
        assert labels.min() >= 0 and labels.max() < size
        assert len(set(labels.tolist())) >= min(size, 20)  # the range is actually used
        values = np.array([e[f"value_{factor}"] for e in examples])
        np.testing.assert_allclose(values, mini_sprites.LATENT_VALUES[factor][labels], rtol=1e-6)
    for e in examples[:50]:
        assert set(np.unique(e["image"]).tolist()) == {0, 1}  # binary, like TFDS dsprites
        expected = mini_sprites.render(*(int(e[f"label_{f}"]) for f in mini_sprites.CARDINALITIES))
        np.testing.assert_array_equal(e["image"], expected)
    for task in [t for t in mini.VTAB_TASKS if t.dataset == "mini_dsprites"]:
        factor = task.label_classes / task.num_classes  # VTAB's class_division_factor
        binned = {int(np.floor(e[task.label_key] / factor)) for e in examples}
        assert binned == set(range(task.num_classes)), task.name


def test_sprite_moves_with_its_position_latents():
    left = mini_sprites.render(0, 5, 0, 0, 16)[..., 0]
    right = mini_sprites.render(0, 5, 0, 31, 16)[..., 0]
    big, small = mini_sprites.render(0, 5, 0, 16, 16), mini_sprites.render(0, 0, 0, 16, 16)
    assert np.nonzero(left)[1].mean() < 20 < 44 < np.nonzero(right)[1].mean()
    assert big.sum() > 3 * small.sum() > 0


def test_crops_stay_inside_their_columns():
    image = np.zeros((100, 200, 3), np.uint8)
    image[:, 100:] = 255
    rng = mini_images.rng_for(0, "test")
    for _ in range(50):
        assert mini_images.random_crop(rng, image, (20, 90), (0.5, 1.0)).min() == 255
        assert mini_images.random_crop(rng, image, (20, 90), (0.0, 0.5)).max() == 0


# ---------------------------------------------------------------- Meta-Dataset sources

def test_md_specs_match_the_reference_format_and_the_records(builds):
    root = builds["a"] / mini.MD_DIR
    assert sorted(p.name for p in root.iterdir()) == sorted(mini.MD_SOURCES)
    for name, source in mini.MD_SOURCES.items():
        text = (root / name / md_records.SPEC_FILE).read_text()
        spec = json.loads(text)
        assert text == json.dumps(spec, indent=2) + "\n"  # the reference converter's formatting
        assert spec["__class__"] == source.spec_class and spec["name"] == name
        assert list(spec) == (BILEVEL_KEYS if source.spec_class == "BiLevelDatasetSpecification" else FLAT_KEYS)
        assert spec["file_pattern"] == "{}.tfrecords"
        num_classes = len(spec["class_names"])
        assert sorted(spec["images_per_class"], key=int) == [str(i) for i in range(num_classes)]
        files = sorted(p.name for p in (root / name).glob("*.tfrecords"))
        assert files == sorted(f"{i}.tfrecords" for i in range(num_classes))
        counts = [spec["images_per_class"][str(i)] for i in range(num_classes)]
        assert set(counts) == {source.images_per_class}
        records = _records([root / name / f"{i}.tfrecords" for i in range(num_classes)])
        # Read in file order, so the labels say which file each record came from.
        assert [label for _, label in records] == [i for i, n in enumerate(counts) for _ in range(n)]
        side = source.image_side
        assert all(img.shape[:2] == (side, side) for img, _ in records)


def test_fonts_source_is_omniglot_like(builds):
    spec = json.loads((builds["a"] / "md" / "mini_fonts" / md_records.SPEC_FILE).read_text())
    per_split = spec["superclasses_per_split"]
    assert list(per_split) == ["TRAIN", "VALID", "TEST"] and per_split["TEST"] >= 2
    sizes = [spec["classes_per_superclass"][str(i)] for i in range(sum(per_split.values()))]
    assert min(sizes) >= 5 and sum(sizes) == len(spec["class_names"])
    names = [spec["superclass_names"][str(i)] for i in range(len(sizes))]
    assert names == [s.name for split in md_records.SPLITS for s in mini_glyphs.SCRIPTS[split]]
    first_class_of = np.cumsum([0] + sizes)
    for superclass, start in zip(names, first_class_of[:-1]):
        assert spec["class_names"][str(int(start))].startswith(superclass + "-")
    image, _ = _records([builds["a"] / "md" / "mini_fonts" / "0.tfrecords"])[0]
    assert image.shape == (28, 28, 1)
    assert np.median(image) == 255 and image.min() < 64  # black ink on white


def test_photos_source_splits(builds):
    spec = json.loads((builds["a"] / "md" / "mini_photos" / md_records.SPEC_FILE).read_text())
    split = spec["classes_per_split"]
    assert split["VALID"] == 5 and split["TEST"] >= 8 and split["TRAIN"] >= 5
    assert sum(split.values()) == len(spec["class_names"]) == len(mini_images.PHOTO_CLASSES)
    assert sorted(spec["class_names"].values()) == sorted(mini_images.PHOTO_CLASSES)


def test_glyphs_render_every_script_with_some_font():
    rng = mini_images.rng_for(0, "glyphs")
    for split in md_records.SPLITS:
        for script in mini_glyphs.SCRIPTS[split]:
            fonts = mini_glyphs.fonts_for(script.chars)
            assert len(fonts) >= 3, script.name
            for char in script.chars:
                assert mini_glyphs.render(char, fonts[-1], rng).min() < 128


# ---------------------------------------------------------------- verify / ensure / errors

def test_damaged_build_is_detected_and_repaired(builds, tmp_path, caplog):
    root = tmp_path / "mini"
    shutil.copytree(builds["a"], root)
    changed = root / "md" / "mini_fonts" / "3.tfrecords"
    changed.write_bytes(changed.read_bytes()[:-10] + b"0123456789")
    missing = root / "tfds" / "mini_digits" / "1.0.0" / "dataset_info.json"
    missing.unlink()
    problems = mini.verify_mini(root)
    assert len(problems) == 2
    assert any(str(changed) in p and "changed" in p for p in problems)
    assert any(str(missing) in p and "missing" in p for p in problems)
    with pytest.raises(DataError, match="damaged mini build.*--force"):
        mini.build_mini(root, seed=0)
    with caplog.at_level(logging.WARNING, logger="data_prep.mini"):
        assert mini.ensure_mini(root, seed=0) == root
    assert str(changed) in caplog.text and str(missing) in caplog.text
    assert mini.verify_mini(root) == []
    assert _files(root) == _files(builds["a"])


def test_intact_build_is_kept_and_other_seed_needs_force(builds):
    root = builds["a"]
    before = (root / mini.MANIFEST).stat().st_mtime_ns
    assert mini.build_mini(root, seed=0) == root
    assert mini.ensure_mini(root, seed=0) == root
    assert (root / mini.MANIFEST).stat().st_mtime_ns == before
    with pytest.raises(DataError, match="holds the mini build with seed 0.*--seed 1 --force"):
        mini.build_mini(root, seed=1)


def test_missing_manifest_is_a_problem(tmp_path):
    assert "MANIFEST.json" in mini.verify_mini(tmp_path)[0]


def test_refuses_to_replace_a_foreign_directory(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="does not look like a mini build"):
        mini.build_mini(tmp_path, seed=0, force=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("seed", [-1, 1.5, "0", True])
def test_bad_seed_is_a_config_error(tmp_path, seed):
    with pytest.raises(ConfigError, match="seed"):
        mini.build_mini(tmp_path / "x", seed=seed)
    with pytest.raises(ConfigError, match="seed"):
        mini.ensure_mini(tmp_path / "x", seed=seed)
    assert not (tmp_path / "x").exists()


def test_seed_may_be_a_numpy_integer():
    assert mini._check_seed(np.int64(3)) == 3


def test_default_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("FEWSHOT_BENCH_HOME", str(tmp_path))
    assert mini.default_mini_root() == tmp_path / "mini"
    monkeypatch.delenv("FEWSHOT_BENCH_HOME")
    assert mini.default_mini_root() == Path.home() / ".cache" / "fewshot_bench" / "mini"
