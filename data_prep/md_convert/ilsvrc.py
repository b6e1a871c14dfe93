"""ILSVRC-2012 (ImageNet) in both Meta-Dataset versions: ``ilsvrc_2012`` (v1) and ``ilsvrc_2012_v2``.

Raw layout (the ILSVRC-2012 training images, one folder per class, plus ImageNet's WordNet files)::

    <raw>/train/<wn_id>/*.JPEG      (or <raw>/<wn_id>/*.JPEG)
    <raw>/wordnet.is_a.txt          "<parent wn_id> <child wn_id>" per line
    <raw>/words.txt                 "<wn_id>\\t<words>" per line

and ``--lists DIR`` holding the reference ``ImageNet_CUBirds_duplicates.txt``,
``ImageNet_Caltech101_duplicates.txt`` and ``ImageNet_Caltech256_duplicates.txt``.

Reference protocol (``HierarchicalDatasetSpecification``): the class folders
are the leaves of a DAG made of them and all their WordNet ancestors, nodes
with a single child collapsed (:mod:`wordnet`). v1 splits it by subtrees:
valid = the leaves below ``n02075296`` (carnivore, 158 classes), test = those
below ``n03183080`` (device, 130), train = the other 712, each split with its
own collapsed subgraph; v2 puts every class in train (the whole DAG; valid and
test empty). Class ids: train leaves sorted by wn_id, then valid, then test.
Images listed in the duplicate lists (by file name) are left out, the rest of
a folder is sorted by name (1,280,764 images); CMYK or PNG-in-JPEG files are
re-encoded as RGB JPEG. The spec counts, for every node of a split, the
images of the leaves it spans. No split file: the split is the WordNet rule.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from data_prep import md_records
from data_prep.md_convert import wordnet
from data_prep.md_convert.common import Plan, list_dirs, list_files, require
from data_prep.md_convert.images import FileImage, encode_file
from data_prep.md_convert.splits import SPLITS
from data_prep.md_convert.writer import ClassJob
from fewshot_bench.errors import ConfigError, DataError

NAME_V1, NAME_V2 = "ilsvrc_2012", "ilsvrc_2012_v2"
VALID_ROOT = "n02075296"  # carnivore
TEST_ROOT = "n03183080"   # device
IS_A, WORDS = "wordnet.is_a.txt", "words.txt"
DUPLICATE_LISTS = ("ImageNet_CUBirds_duplicates.txt", "ImageNet_Caltech101_duplicates.txt",
                   "ImageNet_Caltech256_duplicates.txt")
LAYOUT = """  <raw>/train/<wn_id>/*.JPEG   (or <raw>/<wn_id>/*.JPEG)
  <raw>/wordnet.is_a.txt        (<parent wn_id> <child wn_id>)
  <raw>/words.txt               (<wn_id> TAB <words>)"""


def read_duplicates(lists: Optional[Path]) -> set[str]:
    """File names (``n01531178_12730.JPEG``) of ImageNet images that duplicate CUB or Caltech images."""
    if lists is None:
        raise ConfigError(f"ilsvrc: pass --lists DIR holding {', '.join(DUPLICATE_LISTS)} (the reference "
                          f"dataset_conversion folder): ImageNet images duplicating CUB and Caltech are removed")
    names = set()
    for file_name in DUPLICATE_LISTS:
        path = Path(lists) / file_name
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as e:
            raise ConfigError(f"ilsvrc: cannot read the duplicate list {path} ({e}); pass --lists the folder "
                              f"holding {', '.join(DUPLICATE_LISTS)}") from e
        for line in lines:
            entry = line.split("#", 1)[0].strip()
            if entry:
                names.add(Path(entry).name)
    return names


def _plan(name: str, raw: Path, split_file: Optional[Path], lists: Optional[Path], all_train: bool) -> Plan:
    if split_file is not None:
        raise ConfigError(f"{name}: the class split comes from the WordNet graph (valid: below {VALID_ROOT}, "
                          f"test: below {TEST_ROOT}); leave --splits out")
    require(raw, name, LAYOUT, [IS_A, WORDS])
    class_root = raw / "train" if (raw / "train").is_dir() else raw
    leaves = list_dirs(class_root)
    if not leaves:
        raise DataError(f"{name}: {class_root} holds no class folder. Expected:\n{LAYOUT}")
    words = wordnet.read_words(raw / WORDS)
    children = wordnet.read_is_a(raw / IS_A)
    unknown = [leaf for leaf in leaves if leaf not in words]
    if unknown:
        raise DataError(f"{name}: class folders {unknown[:10]} of {class_root} are not WordNet ids of "
                        f"{raw / WORDS}; keep only the ILSVRC-2012 class folders there")
    skip = read_duplicates(lists)
    graph = wordnet.sampling_graph(leaves, children)
    if all_train:
        split_graphs = {"train": graph, "valid": {}, "test": {}}
    else:
        split_of = wordnet.split_leaves(graph, VALID_ROOT, TEST_ROOT)
        split_graphs = {split: wordnet.split_graph(split_of[split], graph,
                                                   {"train": None, "valid": VALID_ROOT, "test": TEST_ROOT}[split])
                        for split in SPLITS}
    class_names = [leaf for split in SPLITS for leaf in sorted(n for n, k in split_graphs[split].items() if not k)]
    jobs = tuple(ClassJob(class_id, wn_id, tuple(FileImage(str(p)) for p in list_files(class_root / wn_id, skip)),
                          encode_file) for class_id, wn_id in enumerate(class_names))

    def build_spec(counts, path):
        images = dict(zip(class_names, counts))
        nodes, per_node = {}, {}
        for split in SPLITS:
            key = split.upper()
            nodes[key] = wordnet.graph_nodes(split_graphs[split], words)
            spans = wordnet.spanned_leaves(split_graphs[split])
            per_node[key] = {n: sum(images[leaf] for leaf in spans[n]) for n in sorted(spans)}
        return md_records.hierarchical_dataset_spec(name, nodes, per_node, class_names, path)

    return Plan(jobs, build_spec)


def plan_v1(raw: Path, split_file: Optional[Path], lists: Optional[Path], seed: int) -> Plan:
    return _plan(NAME_V1, raw, split_file, lists, all_train=False)


def plan_v2(raw: Path, split_file: Optional[Path], lists: Optional[Path], seed: int) -> Plan:
    return _plan(NAME_V2, raw, split_file, lists, all_train=True)
