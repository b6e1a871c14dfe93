"""All 19 VTAB-1k tasks on tfds.testing.mock_data, the two suites, list_tasks and the scores.

The data dir holds the metadata TFDS writes when it prepares a dataset, with
the real split sizes, so TFDS itself resolves and bounds-checks every slice;
the fake reader serves 8 examples per slice with hand-made label fields.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from fewshot_bench.datasets import vtab
from fewshot_bench.errors import ConfigError
from fewshot_bench.evaluation.evaluator import run_task
from fewshot_bench.evaluation.scores import Row, summarize
from fewshot_bench.learners.base import Learner, Predictor
from fewshot_bench.tasks import POOLED

from test_vtab import FakeTfds, write_prepared

tfds = pytest.importorskip("tensorflow_datasets")

# Split sizes of the prepared TFDS builders (TFDS catalog).
SPLIT_SIZES = {
    "caltech101:3.*.*": {"train": 3060, "test": 6084},
    "cifar100:3.*.*": {"train": 50000, "test": 10000},
    "dtd:3.*.*": {"train": 1880, "validation": 1880, "test": 1880},
    "oxford_flowers102:2.*.*": {"train": 1020, "validation": 1020, "test": 6149},
    "oxford_iiit_pet:4.*.*": {"train": 3680, "test": 3669},
    "svhn_cropped:3.*.*": {"train": 73257, "test": 26032, "extra": 531131},
    "sun397/tfds:4.*.*": {"train": 76128, "validation": 10875, "test": 21750},
    "patch_camelyon:2.*.*": {"train": 262144, "validation": 32768, "test": 32768},
    "eurosat/rgb:2.*.*": {"train": 27000},
    "resisc45:3.*.*": {"train": 31500},
    "diabetic_retinopathy_detection/btgraham-300:3.*.*": {"train": 35126, "validation": 10906, "test": 42670,
                                                           "sample": 10},
    "clevr:3.*.*": {"train": 70000, "validation": 15000, "test": 15000},
    "dmlab:2.0.1": {"train": 65550, "validation": 22628, "test": 22735},
    "kitti:3.1.0": {"train": 6347, "validation": 423, "test": 711},
    "dsprites:2.*.*": {"train": 737280},
    "smallnorb:2.*.*": {"train": 24300, "test": 24300},
}

N = 8  # examples served per slice
CLEVR_COUNTS = [3, 4, 5, 6, 7, 8, 9, 10]
CLEVR_DEPTHS = [7.0, 8.2, 8.7, 9.2, 9.7, 12.0, 8.0, 10.0]
KITTI_FRAMES = [[(0, 5.0)], [(1, 10.0)], [(2, 25.0)], [], [(3, 2.0), (0, 30.0)], [(0, 8.0)],
                [(0, 50.0), (2, 15.0)], [(5, 3.0)]]          # (type, depth); types 0-2 are vehicles
DSPRITES_X = [0, 1, 2, 3, 30, 31, 16, 17]
DSPRITES_ORIENTATION = [0, 2, 3, 5, 39, 20, 37, 12]


def _resize(objects: dict, n: int) -> dict:
    return {k: np.resize(v, (n,) + v.shape[1:]) for k, v in objects.items()}


def fixup(name: str, i: int, ex: dict) -> dict:
    """Give example i of every builder known label fields (see the expected labels below)."""
    if name == "clevr":
        ex["objects"] = _resize(ex["objects"], CLEVR_COUNTS[i])
        ex["objects"]["pixel_coords"][:, 2] = CLEVR_DEPTHS[i] + np.arange(CLEVR_COUNTS[i])
    elif name == "kitti":
        frame = KITTI_FRAMES[i]
        ex["objects"] = _resize(ex["objects"], len(frame))
        ex["objects"]["type"][:] = [t for t, _ in frame]
        ex["objects"]["location"][:, 2] = [z for _, z in frame]
    elif name == "dsprites":
        ex["image"] = ex["image"] % 2                              # binary masks, as in dSprites
        ex["label_x_position"], ex["label_orientation"] = DSPRITES_X[i], DSPRITES_ORIENTATION[i]
    elif name == "smallnorb":
        ex["label_azimuth"], ex["label_elevation"] = (2 * i) % 18, i % 9
    else:
        ex["label"] = i % LABEL_CLASSES[name]
    return ex


# Labels of examples 0..7 of every slice, derived by hand from the fields above.
EXPECTED_LABELS = {
    "clevr(task='count_all')": [0, 1, 2, 3, 4, 5, 6, 7],
    "clevr(task='closest_object_distance')": [0, 1, 2, 3, 4, 5, 0, 4],
    "kitti(task='closest_vehicle_distance')": [0, 1, 2, 3, 2, 0, 1, 3],
    "dsprites(predicted_attribute='label_x_position', num_classes=16)": [0, 0, 1, 1, 15, 15, 8, 8],
    "dsprites(predicted_attribute='label_orientation', num_classes=16)": [0, 0, 1, 2, 15, 8, 14, 4],
    "smallnorb(predicted_attribute='label_azimuth')": [0, 2, 4, 6, 8, 10, 12, 14],
    "smallnorb(predicted_attribute='label_elevation')": [0, 1, 2, 3, 4, 5, 6, 7],
}
# Classes of the 19 tasks (issue 4 table).
NUM_CLASSES = {"caltech101": 102, "cifar(num_classes=100)": 100, "dtd": 47, "oxford_flowers102": 102,
               "oxford_iiit_pet": 37, "svhn": 10, "sun397": 397, "patch_camelyon": 2, "eurosat": 10,
               "resisc45": 45, "diabetic_retinopathy(config='btgraham-300')": 5,
               "clevr(task='count_all')": 8, "clevr(task='closest_object_distance')": 6, "dmlab": 6,
               "kitti(task='closest_vehicle_distance')": 4,
               "dsprites(predicted_attribute='label_x_position', num_classes=16)": 16,
               "dsprites(predicted_attribute='label_orientation', num_classes=16)": 16,
               "smallnorb(predicted_attribute='label_azimuth')": 18,
               "smallnorb(predicted_attribute='label_elevation')": 9}
# Builders whose "label" field is the label: example i gets label i % classes.
LABEL_CLASSES = {"caltech101": 102, "cifar100": 100, "dtd": 47, "oxford_flowers102": 102, "oxford_iiit_pet": 37,
                 "svhn_cropped": 10, "sun397": 397, "patch_camelyon": 2, "eurosat": 10, "resisc45": 45,
                 "diabetic_retinopathy_detection": 5, "dmlab": 6}


def expected_labels(spec) -> list[int]:
    return EXPECTED_LABELS.get(spec.name, [i % spec.num_classes for i in range(N)])


class AlwaysZero(Learner):
    """A learner whose predictor answers class 0 for every query image."""

    def fit(self, support, num_classes, validation=None):
        class Zero(Predictor):
            def predict(self, query):
                logits = np.zeros((len(query), num_classes))
                logits[:, 0] = 1.0
                return logits
        return Zero()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tfds")
    for tfds_name, sizes in SPLIT_SIZES.items():
        write_prepared(root, tfds_name, sizes)
    return root


def test_all_vtab_1k_tasks(data_dir):
    suite = vtab.vtab_suite("vtab-1k", data_dir, query_batch_size=3)
    fake = FakeTfds(num_examples=N, fixup=fixup)
    rows = []
    with tfds.testing.mock_data(data_dir=str(data_dir), as_dataset_fn=lambda b, **kw: fake.read(b, **kw)):
        for source in suite.sources:
            spec = vtab.vtab_spec(source.name)
            start = len(fake.calls)
            task = suite.task(source, 0, seed=0, image_size=8)
            chunks = list(task.query)
            # exactly its three slices, in order, each read in order
            assert [split for _, split in fake.calls[start:start + 3]] == [spec.train800, spec.val200, spec.test]
            assert fake.calls[start][0] == spec.dataset.split("/")[0]
            labels = expected_labels(spec)
            assert task.num_classes == spec.num_classes == NUM_CLASSES[spec.name]
            assert task.support.labels.tolist() == labels + labels, spec.name
            assert task.support.images.shape == (2 * N, 8, 8, 3)
            assert 0.0 <= task.support.images.min() and task.support.images.max() <= 1.0, spec.name
            assert [len(c) for c in chunks] == [3, 3, 2]
            assert [int(x) for c in chunks for x in c.labels] == labels
            assert len(set(task.support.ids) | {i for c in chunks for i in c.ids}) == 3 * N
            outcome = run_task(AlwaysZero(), task)
            assert (outcome.correct, outcome.total) == (labels.count(0), N)
            rows.append(Row(source.name, source.group, source.benchmark, source.scoring, source.name,
                            outcome.correct, outcome.total))

    # hand-computed, from the zeros of each task's labels (x / 8):
    # natural: 7 tasks at 1/8; specialized: camelyon 4/8, eurosat 1/8, resisc45 1/8, retinopathy 2/8;
    # structured: count 1, distance 2, dmlab 2, kitti 2, x 2, orientation 2, azimuth 1, elevation 1 (/8)
    summary = summarize(rows, {s.name: 1 for s in suite.sources})
    assert summary.complete
    assert summary.group_means["natural"] == pytest.approx(1 / 8)
    assert summary.group_means["specialized"] == pytest.approx(8 / 32)
    assert summary.group_means["structured"] == pytest.approx(13 / 64)
    assert summary.overall == pytest.approx((7 + 8 + 13) / 8 / 19)          # 3.5 / 19, task-weighted
    assert summary.overall != pytest.approx((1 / 8 + 8 / 32 + 13 / 64) / 3)  # not the mean of group means

    v2 = vtab.vtab_suite("vtab-v2", data_dir)
    summary = summarize([r for r in rows if r.source != "dtd"], {s.name: 1 for s in v2.sources})
    assert summary.complete
    assert summary.group_means["natural"] == pytest.approx(1 / 8)
    assert summary.overall == pytest.approx((6 + 8 + 13) / 8 / 18)          # 3.375 / 18


def test_grayscale_tasks_tile_to_three_channels(data_dir):
    fake = FakeTfds(num_examples=2, fixup=fixup)
    with tfds.testing.mock_data(data_dir=str(data_dir), as_dataset_fn=lambda b, **kw: fake.read(b, **kw)):
        for name in ("dsprites(predicted_attribute='label_x_position', num_classes=16)",
                     "smallnorb(predicted_attribute='label_elevation')"):
            images = vtab.vtab_task(vtab.vtab_spec(name), data_dir=data_dir, image_size=6).support.images
            assert images.shape == (4, 6, 6, 3)
            np.testing.assert_array_equal(images[..., 0], images[..., 2])
            if name.startswith("dsprites"):      # binary masks scaled by 1, not 255
                assert images.max() > 0.5


def test_suites_groups_and_order():
    one_k = vtab.vtab_suite("vtab-1k", "/nowhere")
    v2 = vtab.vtab_suite("vtab-v2", "/nowhere")
    assert [s.name for s in one_k.sources] == list(vtab.VTAB_1K_TASKS) and one_k.num_tasks == 19
    assert [s.name for s in v2.sources] == [n for n in vtab.VTAB_1K_TASKS if n != "dtd"] and v2.num_tasks == 18
    assert all(s.scoring == POOLED and s.benchmark == "vtab" and s.num_tasks == 1 for s in one_k.sources)
    groups = {}
    for s in one_k.sources:
        groups.setdefault(s.group, []).append(s.name)
    assert groups["natural"] == ["caltech101", "cifar(num_classes=100)", "dtd", "oxford_flowers102",
                                 "oxford_iiit_pet", "svhn", "sun397"]
    assert groups["specialized"] == ["patch_camelyon", "eurosat", "resisc45",
                                     "diabetic_retinopathy(config='btgraham-300')"]
    assert len(groups["structured"]) == 8
    with pytest.raises(ConfigError, match="vtab-2k"):
        vtab.vtab_suite("vtab-2k", None)


def test_list_tasks_json():
    records = vtab.list_tasks("vtab-1k")
    assert len(records) == 19 and len(vtab.list_tasks("vtab-v2")) == 18
    for record in records:
        assert set(record) == {"name", "group", "tfds_name", "num_classes", "train800", "val200", "test"}
        assert json.loads(json.dumps(record)) == record
        assert record["train800"] == "train[:800]"
    by_name = {r["name"]: r for r in records}
    assert by_name["eurosat"] == {"name": "eurosat", "group": "specialized", "tfds_name": "eurosat/rgb:2.*.*",
                                  "num_classes": 10, "train800": "train[:800]", "val200": "train[16200:16400]",
                                  "test": "train[21600:]"}
    assert by_name["smallnorb(predicted_attribute='label_elevation')"]["num_classes"] == 9
    assert by_name["clevr(task='closest_object_distance')"]["test"] == "validation"


def test_task_names_are_canonical_registry_names():
    for name in vtab.VTAB_1K_TASKS:
        assert vtab.VTAB_TASKS.create(name).name == name
    assert vtab.vtab_spec("dsprites(predicted_attribute='label_orientation', num_classes=16)").num_classes == 16
    with pytest.raises(ConfigError, match="count_cylinders"):
        vtab.vtab_spec("clevr(task='count_cylinders')")
    with pytest.raises(ConfigError, match="num_classes=64"):
        vtab.vtab_spec("dsprites(predicted_attribute='label_x_position', num_classes=64)")
    with pytest.raises(ConfigError, match="Did you mean 'caltech101'"):
        vtab.vtab_spec("caltech102")


@pytest.mark.parametrize("gin_file", ["gin/suites/vtab_1k.gin", "gin/suites/vtab_v2.gin"])
def test_gin_presets_bind_the_suite(gin_file, data_dir, monkeypatch):
    import gin

    repo = __import__("pathlib").Path(__file__).resolve().parents[1]
    monkeypatch.chdir(repo)                      # gin resolves includes from the repository root
    assert (repo / gin_file).read_text().startswith("# Used by:  fewshot-bench evaluate --suite vtab-")
    try:
        gin.parse_config_files_and_bindings([gin_file], ["VTAB_QUERY_BATCH_SIZE = 7"])
        suite = vtab.vtab_suite("vtab-v2", data_dir)
    finally:
        gin.clear_config()
    fake = FakeTfds(num_examples=N, fixup=fixup)
    with tfds.testing.mock_data(data_dir=str(data_dir), as_dataset_fn=lambda b, **kw: fake.read(b, **kw)):
        task = suite.task(suite.sources[0], 0, seed=0, image_size=4)
        assert [len(chunk) for chunk in task.query] == [7, 1]
