"""Prepare and verify the VTAB datasets with TFDS (``fewshot-bench prepare vtab --data_dir DIR``).

:func:`prepare_vtab` prepares every TFDS builder the VTAB-1k tasks read,
skipping those already prepared (so an interrupted run resumes where it
stopped; TFDS also resumes partial downloads), says which datasets need a
manual download (file names and where to put them), and then verifies every
split slice the tasks use against the expected number of examples.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path
from typing import Iterable, Optional, Sequence

from fewshot_bench.datasets.vtab import (VtabTaskSpec, name_of, open_builder, overlapping_slices,
                                         prepared_versions, resolve_data_dir, slice_size, split_sizes,
                                         split_tfds_name, suite_specs, version_matches)
from fewshot_bench.errors import ConfigError, FewshotBenchError

# Test split sizes of the VTAB-1k tasks (issue 4 item 6), keyed by TFDS builder.
EXPECTED_TEST_SIZES = {
    "caltech101": 6084, "cifar100": 10000, "cifar10": 10000, "dtd": 1880, "oxford_flowers102": 6149,
    "oxford_iiit_pet": 3669, "svhn_cropped": 26032, "sun397": 21750, "patch_camelyon": 32768,
    "eurosat": 5400, "resisc45": 6300, "diabetic_retinopathy_detection": 42670, "clevr": 15000,
    "dmlab": 22735, "kitti": 711, "dsprites": 73728, "smallnorb": 12150,
}

# Python packages TFDS needs to generate a builder (module -> pip package).
DEPENDENCIES = {
    "diabetic_retinopathy_detection": {"cv2": "opencv-python-headless"},
    "kitti": {"cv2": "opencv-python-headless"},
    "sun397": {"cv2": "opencv-python-headless"},
    "dsprites": {"h5py": "h5py"},
    "patch_camelyon": {"h5py": "h5py"},
    "svhn_cropped": {"scipy": "scipy"},
    "oxford_flowers102": {"scipy": "scipy"},
}


@dataclasses.dataclass(frozen=True)
class ManualDownload:
    """Files a user must fetch by hand, and what must exist in the manual directory afterwards."""

    source: str
    files: str
    layout: str
    required: tuple[str, ...]  # paths relative to the manual directory

    def present(self, manual_dir: Path) -> bool:
        return all((manual_dir / path).exists() for path in self.required)

    def instructions(self, dataset: str, manual_dir: Path) -> str:
        missing = ", ".join(p for p in self.required if not (manual_dir / p).exists())
        return (f"{dataset} needs a manual download. Download {self.files} from {self.source}, then "
                f"{self.layout} so that {manual_dir} holds {', '.join(self.required)} "
                f"(missing: {missing}). Then rerun the same command.")


MANUAL_DOWNLOADS = {
    "diabetic_retinopathy_detection": ManualDownload(
        source="https://www.kaggle.com/c/diabetic-retinopathy-detection/data (Kaggle account, accept the "
               "competition rules)",
        files="train.zip.001-005, test.zip.001-007, sample.zip, trainLabels.csv.zip (about 88 GB)",
        layout="join and unzip the parts: all train images into train/, all test images into test/, "
               "sample.zip into sample/, trainLabels.csv at the top (TFDS fetches the test labels itself)",
        required=("train", "test", "sample", "trainLabels.csv"),
    ),
    "resisc45": ManualDownload(
        source="https://1drv.ms/u/s!AmgKYzARBl5ca3HNaHIlzp_IXjs (OneDrive of the NWPU-RESISC45 authors)",
        files="NWPU-RESISC45.rar",
        layout="extract the archive (e.g. `unrar x NWPU-RESISC45.rar`)",
        required=("NWPU-RESISC45",),
    ),
}


def manual_dir(data_dir: Path) -> Path:
    """Where TFDS looks for manually downloaded files: ``DATA_DIR/downloads/manual``."""
    return data_dir / "downloads" / "manual"


def builder_name(tfds_name: str) -> str:
    """``"eurosat/rgb:2.*.*"`` -> ``"eurosat"``."""
    return split_tfds_name(tfds_name)[0].split("/")[0]


# ---------------------------------------------------------------------------
# Pure verification rules.

def expected_sizes(spec: VtabTaskSpec) -> dict[str, int]:
    """Examples each slice of ``spec`` must hold: 800, 200 and the task's test size."""
    test = EXPECTED_TEST_SIZES.get(builder_name(spec.tfds_name))
    expected = {spec.train800: 800, spec.val200: 200}
    if test is not None:
        expected[spec.test] = test
    return expected


def split_problems(spec: VtabTaskSpec, sizes: dict[str, int]) -> list[str]:
    """Problems of ``spec``'s slices given the prepared split sizes (empty when all is well).

    Each slice must exist and hold the expected number of examples, and the
    three slices must not overlap (test never reaches the support set).
    """
    problems = []
    for split, expected in expected_sizes(spec).items():
        name = name_of(split)
        if name not in sizes:
            problems.append(f"{spec.name}: split {name!r} missing from {spec.tfds_name} "
                            f"(it has {sorted(sizes)})")
            continue
        found = slice_size(split, sizes[name])
        if found != expected:
            problems.append(f"{spec.name}: split {split!r} of {spec.tfds_name} has {found} examples, "
                            f"expected {expected}")
    roles = {"train800": spec.train800, "val200": spec.val200, "test": spec.test}
    problems += [f"{spec.name}: {a} {roles[a]!r} and {b} {roles[b]!r} overlap"
                 for a, b in overlapping_slices(spec, sizes)]
    return problems


# ---------------------------------------------------------------------------
# Preparation and verification.

def select_specs(datasets: Optional[Iterable[str]] = None) -> list[VtabTaskSpec]:
    """VTAB-1k specs, optionally restricted to task names or TFDS builder names."""
    specs = suite_specs("vtab-1k")
    if datasets is None:
        return specs
    wanted = list(datasets)
    chosen = [s for s in specs if {s.name, s.dataset, builder_name(s.tfds_name)} & set(wanted)]
    known = {k for s in specs for k in (s.name, s.dataset, builder_name(s.tfds_name))}
    unknown = [w for w in wanted if w not in known]
    if unknown:
        raise ConfigError(f"unknown VTAB dataset(s) {unknown}; valid TFDS names: "
                          f"{sorted({builder_name(s.tfds_name) for s in specs})}")
    return chosen


def _unique_builders(specs: Sequence[VtabTaskSpec]) -> list[str]:
    return list(dict.fromkeys(s.tfds_name for s in specs))


def verify_vtab(data_dir: str | Path | None, datasets: Optional[Iterable[str]] = None) -> list[str]:
    """Check every split slice of the VTAB-1k tasks in ``data_dir``; returns the problems found."""
    root = resolve_data_dir(data_dir)
    problems = []
    for spec in select_specs(datasets):
        try:
            builder = open_builder(spec, root)
        except FewshotBenchError as e:
            problems.append(str(e))
            continue
        problems.extend(split_problems(spec, split_sizes(builder)))
    return list(dict.fromkeys(problems))


@dataclasses.dataclass(frozen=True)
class DatasetStatus:
    tfds_name: str
    status: str   # "ready" (already prepared), "prepared", "manual" or "failed"
    detail: str = ""


@dataclasses.dataclass(frozen=True)
class PrepareReport:
    data_dir: Path
    datasets: tuple[DatasetStatus, ...]
    problems: tuple[str, ...]  # verification of the prepared datasets

    @property
    def ok(self) -> bool:
        return not self.problems and all(d.status in ("ready", "prepared") for d in self.datasets)

    def format(self) -> str:
        lines = [f"VTAB data in {self.data_dir}:"]
        lines += [f"  {d.status:9s} {d.tfds_name}" + (f": {d.detail}" if d.detail else "") for d in self.datasets]
        if self.problems:
            lines.append("Verification problems:")
            lines += [f"  {p}" for p in self.problems]
        else:
            lines.append("Verification: every prepared split has the expected number of examples.")
        pending = [d for d in self.datasets if d.status in ("manual", "failed")]
        if pending:
            lines.append(f"{len(pending)} dataset(s) not ready; fix the above and rerun "
                         f"`fewshot-bench prepare vtab --data_dir {self.data_dir}` (it resumes).")
        return "\n".join(lines)


def missing_dependencies(dataset: str) -> list[str]:
    """pip packages TFDS needs to generate ``dataset`` that are not installed."""
    return [pip for module, pip in DEPENDENCIES.get(dataset, {}).items()
            if importlib.util.find_spec(module) is None]


def _prepare_one(tfds_name: str, root: Path) -> DatasetStatus:
    import tensorflow_datasets as tfds

    dataset, pattern = split_tfds_name(tfds_name)
    if any(version_matches(v, pattern) for v in prepared_versions(root, dataset)):
        return DatasetStatus(tfds_name, "ready")
    base = builder_name(tfds_name)
    manual = MANUAL_DOWNLOADS.get(base)
    if manual is not None and not manual.present(manual_dir(root)):
        return DatasetStatus(tfds_name, "manual", manual.instructions(base, manual_dir(root)))
    missing = missing_dependencies(base)
    if missing:
        return DatasetStatus(tfds_name, "failed", f"TFDS needs {', '.join(missing)} to build {base}: "
                                                  f"pip install {' '.join(missing)}")
    try:
        builder = tfds.builder(tfds_name, data_dir=str(root))
        builder.download_and_prepare(
            download_dir=str(root / "downloads"),
            download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir(root))))
    except Exception as e:  # network, disk, corrupt archives: report and go on with the others
        return DatasetStatus(tfds_name, "failed", f"{type(e).__name__}: {e}")
    return DatasetStatus(tfds_name, "prepared")


def prepare_vtab(data_dir: str | Path | None, datasets: Optional[Iterable[str]] = None) -> PrepareReport:
    """Prepare the TFDS builders of the VTAB-1k tasks in ``data_dir`` and verify their splits.

    Already prepared builders are skipped; builders needing a manual download
    are reported with instructions; a failure of one builder does not stop the
    others. ``datasets`` restricts the work to task or TFDS builder names.
    """
    root = resolve_data_dir(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    specs = select_specs(datasets)
    statuses = tuple(_prepare_one(name, root) for name in _unique_builders(specs))
    usable = {d.tfds_name for d in statuses if d.status in ("ready", "prepared")}
    problems = verify_vtab(root, [s.name for s in specs if s.tfds_name in usable]) if usable else []
    return PrepareReport(root, statuses, tuple(problems))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m data_prep.vtab --data_dir DIR [--datasets NAME ...] [--verify_only]``."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", help="TFDS data directory (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)")
    parser.add_argument("--datasets", nargs="*", help="only these VTAB tasks or TFDS builders")
    parser.add_argument("--verify_only", action="store_true", help="check the prepared splits, prepare nothing")
    args = parser.parse_args(argv)
    if args.verify_only:
        problems = verify_vtab(args.data_dir, args.datasets)
        print("\n".join(problems) if problems else "every VTAB split has the expected number of examples")
        return 1 if problems else 0
    report = prepare_vtab(args.data_dir, args.datasets)
    print(report.format())
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
