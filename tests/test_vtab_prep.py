"""Preparation and verification of the VTAB datasets (data_prep.vtab), without network.

Prepared datasets are simulated by the metadata TFDS writes (dataset_info.json
with split sizes); TFDS' download_and_prepare is replaced by a fake that
writes that metadata, so resumption and manual downloads can be checked.
"""

from __future__ import annotations

import dataclasses

import pytest

from data_prep import vtab as prep
from fewshot_bench.datasets import vtab
from fewshot_bench.errors import ConfigError

from test_vtab import write_prepared
from test_vtab_suites import SPLIT_SIZES

tfds = pytest.importorskip("tensorflow_datasets")


def test_the_split_table_fits_the_real_split_sizes():
    for spec in vtab.suite_specs("vtab-1k"):
        assert prep.split_problems(spec, SPLIT_SIZES[spec.tfds_name]) == [], spec.name


def test_expected_sizes():
    spec = vtab.vtab_spec("smallnorb(predicted_attribute='label_azimuth')")
    assert prep.expected_sizes(spec) == {"train[:800]": 800, "test[:200]": 200, "test[50%:]": 12150}
    assert prep.expected_sizes(vtab.vtab_spec("dsprites(predicted_attribute='label_x_position', "
                                              "num_classes=16)"))["train[663552:]"] == 73728


def test_wrong_sizes_are_reported_with_both_counts():
    eurosat = vtab.vtab_spec("eurosat")
    assert prep.split_problems(eurosat, {"train": 26000}) == [
        "eurosat: split 'train[21600:]' of eurosat/rgb:2.*.* has 4400 examples, expected 5400"]
    dtd = vtab.vtab_spec("dtd")
    assert prep.split_problems(dtd, {"train": 1880, "test": 1880}) == [
        "dtd: split 'validation' missing from dtd:3.*.* (it has ['test', 'train'])"]


def test_overlapping_slices_are_reported():
    norb = vtab.vtab_spec("smallnorb(predicted_attribute='label_elevation')")
    # a 300-example test split: test[:200] and test[50%:] = test[150:300] overlap
    problems = prep.split_problems(norb, {"train": 24300, "test": 300})
    assert "smallnorb(predicted_attribute='label_elevation'): val200 'test[:200]' and test 'test[50%:]' overlap" \
        in problems
    assert any("has 150 examples, expected 12150" in p for p in problems)
    leaky = dataclasses.replace(vtab.vtab_spec("caltech101"), val200="train[700:900]")
    assert prep.split_problems(leaky, SPLIT_SIZES["caltech101:3.*.*"]) == [
        "caltech101: train800 'train[:800]' and val200 'train[700:900]' overlap"]


def test_verify_vtab(tmp_path):
    write_prepared(tmp_path, "clevr:3.*.*", SPLIT_SIZES["clevr:3.*.*"])
    write_prepared(tmp_path, "dsprites:2.*.*", {"train": 700000})
    problems = prep.verify_vtab(tmp_path, ["clevr", "dsprites", "kitti"])
    assert ("dsprites(predicted_attribute='label_x_position', num_classes=16): split "
            "'train[663552:]' of dsprites:2.*.* has 36448 examples, expected 73728") in problems
    assert any("orientation" in p and "36448" in p for p in problems)
    kitti = [p for p in problems if "kitti" in p]
    assert len(kitti) == 1 and f"fewshot-bench prepare vtab --data_dir {tmp_path}" in kitti[0]
    assert len(problems) == 3      # both clevr tasks are fine
    assert prep.verify_vtab(tmp_path, ["clevr"]) == []


def test_select_specs():
    assert [s.name for s in prep.select_specs(["clevr"])] == [
        "clevr(task='count_all')", "clevr(task='closest_object_distance')"]
    assert [s.name for s in prep.select_specs(["eurosat/rgb", "dmlab"])] == ["eurosat", "dmlab"]
    assert len(prep.select_specs(None)) == 19
    with pytest.raises(ConfigError, match="imagenet"):
        prep.select_specs(["imagenet"])


class FakePrepare:
    """Stands in for DatasetBuilder.download_and_prepare: writes the metadata of a prepared dataset."""

    def __init__(self, failing=()):
        self.calls, self.failing = [], set(failing)

    def install(self, monkeypatch):
        fake = self

        def download_and_prepare(builder, download_dir=None, download_config=None, **_):
            fake.calls.append((builder.name, download_dir, download_config.manual_dir))
            if builder.name in fake.failing:
                raise ConnectionError(f"cannot reach the {builder.name} server")
            tfds_name = next(n for n in SPLIT_SIZES if prep.builder_name(n) == builder.name)
            write_prepared(builder.data_dir_root, tfds_name, SPLIT_SIZES[tfds_name])

        monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", download_and_prepare)


def test_prepare_vtab_reports_manual_resumes_and_verifies(tmp_path, monkeypatch):
    write_prepared(tmp_path, "clevr:3.*.*", SPLIT_SIZES["clevr:3.*.*"])     # prepared by an earlier run
    fake = FakePrepare(failing={"smallnorb"})
    fake.install(monkeypatch)
    report = prep.prepare_vtab(tmp_path, ["clevr", "resisc45", "dsprites", "smallnorb"])

    status = {d.tfds_name: d for d in report.datasets}
    assert [d.tfds_name for d in report.datasets] == ["resisc45:3.*.*", "clevr:3.*.*", "dsprites:2.*.*",
                                                      "smallnorb:2.*.*"]
    assert status["clevr:3.*.*"].status == "ready"
    assert status["dsprites:2.*.*"].status == "prepared"
    assert status["smallnorb:2.*.*"].status == "failed" and "cannot reach" in status["smallnorb:2.*.*"].detail
    manual = status["resisc45:3.*.*"]
    assert manual.status == "manual"
    assert "NWPU-RESISC45.rar" in manual.detail and str(tmp_path / "downloads" / "manual") in manual.detail
    manual_dir = str(tmp_path / "downloads" / "manual")
    assert fake.calls == [("dsprites", str(tmp_path / "downloads"), manual_dir),
                          ("smallnorb", str(tmp_path / "downloads"), manual_dir)]
    assert report.problems == () and not report.ok
    assert "rerun `fewshot-bench prepare vtab" in report.format()

    # the user extracts the archive and reruns: only what is left gets prepared
    (tmp_path / "downloads" / "manual" / "NWPU-RESISC45").mkdir(parents=True)
    fake.calls.clear()
    fake.failing.clear()
    report = prep.prepare_vtab(tmp_path, ["clevr", "resisc45", "dsprites", "smallnorb"])
    assert [c[0] for c in fake.calls] == ["resisc45", "smallnorb"]
    assert report.ok and report.problems == ()
    assert all(d.status in ("ready", "prepared") for d in report.datasets)


def test_prepare_vtab_verifies_what_it_prepared(tmp_path, monkeypatch):
    write_prepared(tmp_path, "kitti:3.1.0", {"train": 6347, "validation": 423, "test": 700})
    FakePrepare().install(monkeypatch)
    report = prep.prepare_vtab(tmp_path, ["kitti"])
    assert [d.status for d in report.datasets] == ["ready"]
    assert report.problems == ("kitti(task='closest_vehicle_distance'): split 'test' of kitti:3.1.0 has 700 "
                               "examples, expected 711",)
    assert not report.ok


def test_prepare_vtab_names_missing_python_packages(tmp_path, monkeypatch):
    monkeypatch.setitem(prep.DEPENDENCIES, "dmlab", {"fewshot_no_such_module": "no-such-package"})
    fake = FakePrepare()
    fake.install(monkeypatch)
    report = prep.prepare_vtab(tmp_path, ["dmlab"])
    assert report.datasets[0].status == "failed"
    assert "pip install no-such-package" in report.datasets[0].detail and fake.calls == []


def test_retinopathy_manual_instructions(tmp_path):
    instructions = prep.MANUAL_DOWNLOADS["diabetic_retinopathy_detection"]
    where = prep.manual_dir(tmp_path)
    assert not instructions.present(where)
    text = instructions.instructions("diabetic_retinopathy_detection", where)
    for name in ("kaggle.com/c/diabetic-retinopathy-detection", "train.zip", "test.zip", "trainLabels.csv",
                 str(where)):
        assert name in text
    for sub in ("train", "test", "sample"):
        (where / sub).mkdir(parents=True)
    (where / "trainLabels.csv").write_text("image,level\n")
    assert instructions.present(where)
