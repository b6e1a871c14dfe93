"""Protocol versions a submission can name, and the tasks / sources each one has.

A submission names one protocol; a protocol covers one or both halves of
VTAB+MD, each half at one version (a *part*): ``vtab+md`` is VTAB-v2 plus
MD-v2 (Dumoulin et al. 2021). Tables only ever compare figures of the same part
version unless asked to mix them.
"""

from __future__ import annotations

import dataclasses
import functools

VTAB, MD = "vtab", "md"
BENCHMARK_TITLES = {VTAB: "VTAB", MD: "MD"}
VTAB_GROUPS = ("natural", "specialized", "structured")

# protocol -> {benchmark: version of that half}
PROTOCOLS: dict[str, dict[str, str]] = {
    "vtab-1k": {VTAB: "vtab-1k"},
    "vtab-v2": {VTAB: "vtab-v2"},
    "md-v1": {MD: "md-v1"},
    "md-v2": {MD: "md-v2"},
    "vtab+md": {VTAB: "vtab-v2", MD: "md-v2"},
    "mini": {VTAB: "mini", MD: "mini"},
}

# Column titles of the published tables: VTAB's results.csv (google-research/
# task_adaptation) and the Meta-Dataset README; other names are shown as they are.
DISPLAY_NAMES = {
    "caltech101": "Caltech101", "cifar(num_classes=100)": "CIFAR-100", "dtd": "DTD",
    "oxford_flowers102": "Flowers102", "oxford_iiit_pet": "Pets", "svhn": "SVHN", "sun397": "Sun397",
    "patch_camelyon": "Camelyon", "eurosat": "EuroSAT", "resisc45": "Resisc45",
    "diabetic_retinopathy(config='btgraham-300')": "Retinopathy",
    "clevr(task='count_all')": "Clevr-Count", "clevr(task='closest_object_distance')": "Clevr-Dist",
    "dmlab": "DMLab", "kitti(task='closest_vehicle_distance')": "KITTI-Dist",
    "dsprites(predicted_attribute='label_x_position', num_classes=16)": "dSpr-Loc",
    "dsprites(predicted_attribute='label_orientation', num_classes=16)": "dSpr-Orient",
    "smallnorb(predicted_attribute='label_azimuth')": "sNORB-Azim",
    "smallnorb(predicted_attribute='label_elevation')": "sNORB-Elev",
    "ilsvrc_2012": "ILSVRC", "omniglot": "Omniglot", "aircraft": "Aircraft", "cu_birds": "Birds",
    "quickdraw": "Quick Draw", "fungi": "Fungi", "vgg_flower": "VGG Flower", "traffic_sign": "Traffic signs",
    "mscoco": "MSCOCO",
}
MD_DISPLAY_OVERRIDES = {"dtd": "Textures"}  # MD's README calls its dtd source "Textures"


@dataclasses.dataclass(frozen=True)
class SourceInfo:
    """One column of a table: a VTAB task or an MD source of one part version."""

    name: str
    group: str
    benchmark: str

    @property
    def title(self) -> str:
        if self.benchmark == MD and self.name in MD_DISPLAY_OVERRIDES:
            return MD_DISPLAY_OVERRIDES[self.name]
        return DISPLAY_NAMES.get(self.name, self.name)


@functools.lru_cache(maxsize=None)
def part_sources(benchmark: str, version: str) -> tuple[SourceInfo, ...]:
    """The tasks (VTAB) or test sources (MD) of one part version, in protocol order."""
    if version == "mini":
        from data_prep.mini import MD_SOURCES, VTAB_TASKS

        if benchmark == VTAB:
            return tuple(SourceInfo(t.name, t.group, VTAB) for t in VTAB_TASKS)
        return tuple(SourceInfo(name, MD, MD) for name in MD_SOURCES)
    if benchmark == VTAB:
        from fewshot_bench.datasets.vtab import SUITE_TASKS, vtab_spec

        return tuple(SourceInfo(name, vtab_spec(name).group, VTAB) for name in SUITE_TASKS[version])
    from fewshot_bench.datasets.meta_dataset.protocol import PROTOCOL_SOURCES

    return tuple(SourceInfo(name, MD, MD) for name in PROTOCOL_SOURCES[version])


def protocol_parts(protocol: str) -> dict[str, tuple[SourceInfo, ...]]:
    """``{benchmark: sources}`` of a protocol, e.g. ``vtab+md`` -> VTAB-v2 tasks and MD-v2 sources."""
    return {benchmark: part_sources(benchmark, version) for benchmark, version in PROTOCOLS[protocol].items()}
