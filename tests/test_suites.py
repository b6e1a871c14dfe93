"""Every suite name resolves, on synthetic VTAB metadata and tiny Meta-Dataset records."""

import numpy as np
import pytest

from data_prep import md_records
from fewshot_bench.errors import DataError
from fewshot_bench.datasets.meta_dataset import MD_V1_TEST_SOURCES, MD_V2_TEST_SOURCES
from fewshot_bench.datasets.vtab import suite_specs
from fewshot_bench.suites import SUITES
from fewshot_bench.tasks import EPISODES, POOLED
from test_vtab import make_data_dir  # noqa: E402  (pytest puts tests/ on sys.path)


@pytest.fixture(scope="module")
def records_root(tmp_path_factory):
    """Tiny flat sources under every MD-v1/MD-v2 test source name: 5 classes per split, 4 images each."""
    root = tmp_path_factory.mktemp("records")
    rng = np.random.default_rng(0)
    for name in sorted(set(MD_V1_TEST_SOURCES) | set(MD_V2_TEST_SOURCES)):
        source = root / name
        source.mkdir()
        classes = {split: [f"{split.lower()}{i}" for i in range(5)] for split in md_records.SPLITS}
        for class_id in range(15):
            md_records.write_class(source, class_id, [rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
                                                      for _ in range(4)])
        md_records.write_spec(source, md_records.dataset_spec(name, classes, [4] * 15))
    return root


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_data_dir(tmp_path_factory.mktemp("tfds"), suite_specs("vtab-1k"))


def test_vtab_suites_resolve(data_dir):
    one_k = SUITES.create("vtab-1k", data_dir=str(data_dir))
    v2 = SUITES.create("vtab-v2", data_dir=str(data_dir))
    assert len(one_k.sources) == 19 and len(v2.sources) == 18
    assert {s.name for s in one_k.sources} - {s.name for s in v2.sources} == {"dtd"}
    assert all(s.scoring == POOLED and s.num_tasks == 1 for s in one_k.sources)


@pytest.mark.parametrize("name, sources", [("md-v1", MD_V1_TEST_SOURCES), ("md-v2", MD_V2_TEST_SOURCES)])
def test_md_suites_resolve_and_build_episodes(records_root, name, sources):
    suite = SUITES.create(name, records_root=str(records_root), episodes=3)
    assert [s.name for s in suite.sources] == list(sources)
    assert all(s.scoring == EPISODES and s.num_tasks == 3 for s in suite.sources)
    task = suite.task(suite.sources[0], 2, seed=0, image_size=16)
    assert task.suite == name and task.support.images.shape[1:] == (16, 16, 3)
    assert SUITES.create(name, records_root=str(records_root)).sources[0].num_tasks == 600  # protocol default


def test_vtab_md_puts_both_halves_side_by_side(data_dir, records_root):
    suite = SUITES.create("vtab+md", data_dir=str(data_dir), records_root=str(records_root), episodes=2)
    halves = [s.benchmark for s in suite.sources]
    assert halves.count("vtab") == 18 and halves.count("md") == 8
    assert "dtd" not in {s.name for s in suite.sources if s.benchmark == "vtab"}  # dtd belongs to MD
    assert "vgg_flower" not in {s.name for s in suite.sources if s.benchmark == "md"}  # ... and flowers to VTAB


def test_missing_parts_are_all_named_before_any_work(tmp_path, data_dir):
    (tmp_path / "records" / "dtd").mkdir(parents=True)
    with pytest.raises(DataError) as err:
        SUITES.create("vtab+md", data_dir=str(tmp_path / "nothing"), records_root=str(tmp_path / "records"))
    message = str(err.value)
    assert "data missing for 26 part(s)" in message
    assert "fewshot-bench prepare vtab --data_dir" in message
    assert "fewshot-bench prepare md --source omniglot --raw DIR" in message
    with pytest.raises(DataError, match="needs --records_root"):
        SUITES.create("md-v2", data_dir=str(data_dir))
