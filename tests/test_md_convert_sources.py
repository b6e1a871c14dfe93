"""Meta-Dataset converters, source by source: a tiny raw tree in the source's own layout, converted and
read back through the Meta-Dataset reader (spec counts, names, labels, crops and pixels)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_prep.md_convert import convert_source
from data_prep.md_convert.images import coco_crop_box
from data_prep.md_convert.splits import seeded_split
from data_prep.md_convert.traffic_sign import shuffled
from fewshot_bench.datasets.meta_dataset.describe import check_source
from fewshot_bench.datasets.meta_dataset.reader import SourceReader, parse_example
from fewshot_bench.datasets.meta_dataset.spec import BILEVEL, FLAT, HIERARCHICAL, load_spec
from fewshot_bench.errors import DataError

SHARED_MD = Path(__file__).resolve().parents[1].parent / "shared" / "meta_dataset"
LISTS = SHARED_MD / "lists"
TOLERANCE = 8  # JPEG error on flat colours


# ---------------------------------------------------------------- helpers

def save(path: Path, pixels: np.ndarray, fmt: str | None = None, **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(pixels, np.uint8)).save(path, format=fmt, **options)
    return path


def flat(colour, size=(16, 16)) -> np.ndarray:
    """A uniform RGB image (``colour`` a triple) or grayscale one (``colour`` an int)."""
    if isinstance(colour, int):
        return np.full(size, colour, np.uint8)
    return np.broadcast_to(np.asarray(colour, np.uint8), (*size, 3)).copy()


def records(root: Path, source: str) -> dict[int, list[np.ndarray]]:
    """Every record of every class, decoded at its stored size, with labels checked."""
    reader = SourceReader(root / source)
    out = {}
    for class_id, count in reader.spec.images_per_class.items():
        images = []
        for r, data in enumerate(reader.read_raw(class_id, range(count))):
            image, label = parse_example(data, reader.where(class_id, r))
            assert label == class_id
            images.append(np.asarray(Image.open(io.BytesIO(image)).convert("RGB")))
        out[class_id] = images
    return out


def colour_of(image: np.ndarray) -> np.ndarray:
    return image.reshape(-1, 3).mean(axis=0)


def assert_colour(image: np.ndarray, colour) -> None:
    expected = np.asarray([colour] * 3 if isinstance(colour, int) else colour, np.float64)
    assert np.abs(colour_of(image) - expected).max() <= TOLERANCE, (colour_of(image), expected)


def convert(source, raw, out, **kwargs):
    report = convert_source(source, raw, out, workers=1, progress=False, **kwargs)
    assert check_source(out, source) == []
    return report


def write_split(path: Path, train, valid, test) -> Path:
    path.write_text(json.dumps({"train": train, "valid": valid, "test": test}))
    return path


# ---------------------------------------------------------------- sources

def test_omniglot_alphabets_as_superclasses_inverted(tmp_path):
    raw = tmp_path / "raw"
    tree = {("images_background", "Latin"): 2, ("images_background", "Tagalog"): 1,
            ("images_evaluation", "Keble"): 2}
    value = 10
    values = {}
    for (folder, alphabet), characters in tree.items():
        for c in range(1, characters + 1):
            for i in range(2):
                save(raw / folder / alphabet / f"character{c:02d}" / f"img_{i}.png", flat(value))
                values[(alphabet, c, i)] = value
                value += 24
    report = convert("omniglot", raw, tmp_path / "out")
    spec = load_spec(tmp_path / "out" / "omniglot")
    assert spec.kind == BILEVEL and report.num_classes == 5 and report.images == 10
    assert spec.superclasses == {"train": ((0, 1),), "valid": ((2,),), "test": ((3, 4),)}
    assert [spec.class_names[i] for i in range(5)] == [
        "Latin-character01", "Latin-character02", "Tagalog-character01", "Keble-character01", "Keble-character02"]
    data = json.loads((tmp_path / "out" / "omniglot" / "dataset_spec.json").read_text())
    assert data["superclass_names"] == {"0": "Latin", "1": "Tagalog", "2": "Keble"}
    order = [("Latin", 1), ("Latin", 2), ("Tagalog", 1), ("Keble", 1), ("Keble", 2)]
    for class_id, images in records(tmp_path / "out", "omniglot").items():
        alphabet, c = order[class_id]
        assert [im.shape for im in images] == [(16, 16, 3)] * 2
        for i, image in enumerate(images):
            assert_colour(image, 255 - values[(alphabet, c, i)])  # inverted, as the reference does


def test_aircraft_crops_to_the_bounding_box(tmp_path):
    raw = tmp_path / "raw"
    data = raw / "data"
    boxes, variants, colours = {}, {}, {}
    names = {"A300B4": ["0001", "0002"], "Cessna 172": ["0003"], "F-16A/B": ["0004", "0005"]}
    for k, (variant, images) in enumerate(names.items()):
        for j, image in enumerate(images):
            pixels = flat((200, 200, 200), (30, 40))
            box = (3 + j, 4 + k, 20 + j, 14 + 2 * k)  # xmin ymin xmax ymax
            colours[image] = (40 * k, 100, 60 * j + 20)
            pixels[box[1]:box[3], box[0]:box[2]] = colours[image]
            save(data / "images" / f"{image}.jpg", pixels, quality=95)
            boxes[image], variants[image] = box, variant
    (data / "images_box.txt").write_text("".join(f"{n} {' '.join(map(str, b))}\n" for n, b in boxes.items()))
    (data / "images_variant_trainval.txt").write_text("0001 A300B4\n0003 Cessna 172\n0004 F-16A/B\n")
    (data / "images_variant_test.txt").write_text("0002 A300B4\n0005 F-16A/B\n")
    splits = write_split(tmp_path / "aircraft_splits.json", ["F-16A/B"], ["Cessna 172"], ["A300B4"])
    convert("aircraft", raw, tmp_path / "out", splits=splits)
    spec = load_spec(tmp_path / "out" / "aircraft")
    assert spec.kind == FLAT and spec.split_classes == {"train": (0,), "valid": (1,), "test": (2,)}
    assert [spec.class_names[i] for i in range(3)] == ["F-16A/B", "Cessna 172", "A300B4"]
    assert dict(spec.images_per_class) == {0: 2, 1: 1, 2: 2}
    class_images = {0: ["0004", "0005"], 1: ["0003"], 2: ["0001", "0002"]}
    for class_id, images in records(tmp_path / "out", "aircraft").items():
        for image, name in zip(images, class_images[class_id]):
            xmin, ymin, xmax, ymax = boxes[name]
            assert image.shape == (ymax - ymin, xmax - xmin, 3)
            assert_colour(image, colours[name])


def test_cu_birds_seeded_split_keeps_rgb_jpeg_bytes(tmp_path):
    raw = tmp_path / "CUB_200_2011"
    species = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross", "004.Groove_billed_Ani"]
    paths = {}
    for k, name in enumerate(species):
        paths[name] = [save(raw / "images" / name / f"{name[4:]}_{i}.jpg", flat((50 * k, 30 * i, 90)), quality=90)
                       for i in range(2)]
    save(raw / "images" / species[0] / "zz_gray.jpg", flat(77), quality=90)  # grayscale: re-encoded as RGB
    convert("cu_birds", raw, tmp_path / "out")
    spec = load_spec(tmp_path / "out" / "cu_birds")
    expected = seeded_split(species, (2, 1, 1))  # int(0.7 * 4), int(0.85 * 4) - int(0.7 * 4), rest
    order = expected["train"] + expected["valid"] + expected["test"]
    assert [spec.class_names[i] for i in range(4)] == order
    assert spec.split_classes == {"train": (0, 1), "valid": (2,), "test": (3,)}
    reader = SourceReader(tmp_path / "out" / "cu_birds")
    for class_id, name in enumerate(order):
        raw_records = [parse_example(d, "")[0] for d in reader.read_raw(class_id, range(2))]
        assert raw_records == [p.read_bytes() for p in paths[name]]  # RGB JPEGs are stored byte for byte
    gray = records(tmp_path / "out", "cu_birds")[order.index(species[0])][2]
    assert gray.shape == (16, 16, 3)
    assert_colour(gray, 77)


def test_quickdraw_bitmaps_become_rgb_jpegs(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    np.save(raw / "cat.npy", np.stack([np.full(784, v, np.uint8) for v in (0, 120, 250)]))
    np.save(raw / "police car.npy", np.stack([np.full(784, v, np.uint8) for v in (60, 180)]))
    np.save(raw / "axe.npy", np.stack([np.arange(784) % 2 == 0, np.zeros(784, bool)]))  # bool bitmaps
    splits = write_split(tmp_path / "qd.json", ["police car", "cat"], [], ["axe"])
    report = convert("quickdraw", raw, tmp_path / "out", splits=splits)
    spec = load_spec(tmp_path / "out" / "quickdraw")
    assert [spec.class_names[i] for i in range(3)] == ["police car", "cat", "axe"]
    assert dict(spec.images_per_class) == {0: 2, 1: 3, 2: 2} and report.images == 7
    got = records(tmp_path / "out", "quickdraw")
    for image, value in zip(got[0] + got[1], (60, 180, 0, 120, 250)):
        assert image.shape == (28, 28, 3)
        assert_colour(image, value)
    assert_colour(got[2][0], 127) and assert_colour(got[2][1], 0)  # half the pixels at 255


def test_fungi_pools_train_and_val(tmp_path):
    raw = tmp_path / "raw"
    categories = [{"id": 0, "name": "Abortiporus biennis"}, {"id": 1, "name": "Agaricus augustus"},
                  {"id": 2, "name": "Agaricus augustus"}]  # names may repeat: the id makes them unique
    colours = {}

    def annotations(first_id, per_class):
        images, notes = [], []
        for category, count in per_class.items():
            for _ in range(count):
                image_id = first_id + len(images)
                name = f"images/{category}_folder/{image_id}.JPG"
                colours[image_id] = (30 * image_id, 200 - 20 * image_id, 80)
                save(raw / name, flat(colours[image_id]), fmt="JPEG", quality=95)
                images.append({"id": image_id, "file_name": name})
                notes.append({"id": image_id, "image_id": image_id, "category_id": category})
        return {"images": images, "annotations": notes, "categories": categories}

    (raw / "train.json").write_text(json.dumps(annotations(0, {0: 2, 1: 1, 2: 1})))
    (raw / "val.json").write_text(json.dumps(annotations(4, {0: 1, 2: 1})))
    splits = write_split(tmp_path / "f.json", ["0002.Agaricus augustus"], ["0000.Abortiporus biennis"],
                         ["0001.Agaricus augustus"])
    convert("fungi", raw, tmp_path / "out", splits=splits)
    spec = load_spec(tmp_path / "out" / "fungi")
    assert dict(spec.images_per_class) == {0: 2, 1: 3, 2: 1}
    got = records(tmp_path / "out", "fungi")
    for class_id, image_ids in {0: [3, 5], 1: [0, 1, 4], 2: [2]}.items():  # train.json images, then val.json
        for image, image_id in zip(got[class_id], image_ids):
            assert_colour(image, colours[image_id])


def test_vgg_flower_labels_from_the_mat_file_and_the_label_list(tmp_path):
    from scipy.io import savemat

    raw = tmp_path / "raw"
    labels = [2, 1, 3, 1, 2, 2, 3]
    for i, label in enumerate(labels):
        save(raw / "jpg" / f"image_{i + 1:05d}.jpg", flat((60 * label, 10 * i, 100)), quality=95)
    savemat(raw / "imagelabels.mat", {"labels": np.asarray([labels], np.uint8)})
    convert("vgg_flower", raw, tmp_path / "out", lists=LISTS)
    spec = load_spec(tmp_path / "out" / "vgg_flower")
    names = ["001.pink primrose", "002.hard-leaved pocket orchid", "003.canterbury bells"]
    expected = seeded_split(names, (2, 0, 1))
    assert [spec.class_names[i] for i in range(3)] == expected["train"] + expected["valid"] + expected["test"]
    got = records(tmp_path / "out", "vgg_flower")
    for class_id in range(3):
        label = int(spec.class_names[class_id][:3])
        indices = [i for i, lab in enumerate(labels) if lab == label]
        assert spec.images_per_class[class_id] == len(indices)
        for image, i in zip(got[class_id], indices):
            assert_colour(image, (60 * label, 10 * i, 100))
    splits = write_split(tmp_path / "v.json", ["003.canterbury bells"], [], ["001.pink primrose"])
    report = convert("vgg_flower", raw, tmp_path / "out2", splits=splits)
    assert report.unassigned == ("002",)  # named by its number: no label list given
    assert [load_spec(tmp_path / "out2" / "vgg_flower").class_names[i] for i in range(2)] == [
        "003.canterbury bells", "001.pink primrose"]


def test_traffic_sign_all_test_shuffled_within_class(tmp_path):
    raw = tmp_path / "GTSRB"
    colours = {}
    for number, count in ((0, 5), (1, 3)):
        folder = raw / "Final_Training" / "Images" / f"{number:05d}"
        for i in range(count):
            name = f"00000_{i:05d}.ppm"
            colours[(number, name)] = (100 * number + 20, 40 * i, 200)
            save(folder / name, flat(colours[(number, name)]), fmt="PPM")
        (folder / f"GT-{number:05d}.csv").write_text("Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId\n")
    convert("traffic_sign", raw, tmp_path / "out", lists=LISTS, seed=5)
    spec = load_spec(tmp_path / "out" / "traffic_sign")
    assert spec.split_classes == {"train": (), "valid": (), "test": (0, 1)}
    assert [spec.class_names[i] for i in range(2)] == ["00.Speed limit (20km/h)", "01.Speed limit (30km/h)"]
    got = records(tmp_path / "out", "traffic_sign")
    for number, count in ((0, 5), (1, 3)):
        files = sorted((raw / "Final_Training" / "Images" / f"{number:05d}").glob("*.ppm"))
        order = [p.name for p in shuffled(files, 5, number)]
        assert sorted(order) == [p.name for p in files]  # every image once, the csv left out
        for image, name in zip(got[number], order):
            assert_colour(image, colours[(number, name)])


def test_mscoco_object_crops_with_a_1_2_box_scale(tmp_path):
    raw = tmp_path / "raw"
    for image_id in (9, 25):
        pixels = flat((250, 250, 250), (40, 50))
        pixels[10:30, 10:40] = (0, 0, 200) if image_id == 9 else (200, 0, 0)
        save(raw / "train2017" / f"{image_id:012d}.jpg", pixels, quality=95)
    categories = [{"id": 1, "name": "person"}, {"id": 2, "name": "bicycle"}, {"id": 3, "name": "car"}]
    annotations = [
        {"id": 1, "image_id": 9, "category_id": 1, "bbox": [10.0, 20.0, 10.0, 5.0]},
        {"id": 2, "image_id": 25, "category_id": 3, "bbox": [0.0, 0.0, 50.0, 40.0]},   # clipped to the image
        {"id": 3, "image_id": 9, "category_id": 2, "bbox": [15.0, 12.0, 20.0, 15.0]},
        {"id": 4, "image_id": 25, "category_id": 1, "bbox": [500.0, 10.0, 5.0, 5.0]},  # outside: empty crop
        {"id": 5, "image_id": 25, "category_id": 2, "bbox": [12.0, 12.0, 4.0, 4.0]},
    ]
    (raw / "annotations").mkdir(parents=True)
    (raw / "annotations" / "instances_train2017.json").write_text(
        json.dumps({"images": [], "annotations": annotations, "categories": categories}))
    report = convert("mscoco", raw, tmp_path / "out")
    assert [image for image, _ in report.skipped] == [f"{raw / 'train2017' / '000000000025.jpg'} box "
                                                      f"[500.0, 10.0, 5.0, 5.0]"]
    assert "empty crop" in report.skipped[0][1]
    spec = load_spec(tmp_path / "out" / "mscoco")
    expected = seeded_split(["person", "bicycle", "car"], (0, 1, 2))  # categories in file order
    order = expected["train"] + expected["valid"] + expected["test"]
    assert [spec.class_names[i] for i in range(3)] == order
    got = records(tmp_path / "out", "mscoco")
    person, bicycle, car = (got[order.index(n)] for n in ("person", "bicycle", "car"))
    assert len(person) == 1 and len(bicycle) == 2 and len(car) == 1
    assert person[0].shape == (26 - 19, 21 - 8, 3)            # box (8, 19, 21, 26), hand-computed
    assert car[0].shape == (40, 50, 3)                          # the whole image
    assert bicycle[0].shape == (29 - 10, 37 - 12, 3)            # box (12, 10, 37, 29), hand-computed
    assert coco_crop_box((15.0, 12.0, 20.0, 15.0), 50, 40) == (12, 10, 37, 29)
    assert bicycle[1].shape == (6, 6, 3)                          # box (11, 11, 17, 17)
    assert_colour(bicycle[1], (200, 0, 0))                        # inside the red patch


# ---------------------------------------------------------------- ILSVRC-2012

WORDS = {
    "n00001740": "entity", "n00015388": "animal", "n00021939": "artifact", "n02075296": "carnivore",
    "n01503061": "bird", "n02084071": "dog", "n02121808": "domestic cat", "n02085620": "Chihuahua",
    "n02085782": "Japanese spaniel", "n02123045": "tabby", "n02123159": "tiger cat", "n01530575": "brambling",
    "n01531178": "goldfinch", "n03575240": "instrumentality", "n03183080": "device", "n03085013": "keyboard",
    "n03793489": "mouse", "n03094503": "container", "n02747177": "ashcan", "n09999999": "unrelated",
}
IS_A = [("n00001740", "n00015388"), ("n00001740", "n00021939"), ("n00015388", "n02075296"),
        ("n00015388", "n01503061"), ("n02075296", "n02084071"), ("n02075296", "n02121808"),
        ("n02084071", "n02085620"), ("n02084071", "n02085782"), ("n02121808", "n02123045"),
        ("n02121808", "n02123159"), ("n01503061", "n01530575"), ("n01503061", "n01531178"),
        ("n00021939", "n03575240"), ("n03575240", "n03183080"), ("n03575240", "n03094503"),
        ("n03183080", "n03085013"), ("n03183080", "n03793489"), ("n03094503", "n02747177"),
        ("n00001740", "n09999999")]
LEAVES = {"n02085620": 2, "n02085782": 1, "n02123045": 1, "n02123159": 1,  # valid (below carnivore)
          "n01530575": 1, "n01531178": 2, "n02747177": 1,                  # train
          "n03085013": 1, "n03793489": 2}                                  # test (below device)


@pytest.fixture(scope="module")
def imagenet_raw(tmp_path_factory):
    raw = tmp_path_factory.mktemp("imagenet")
    for k, (wn_id, count) in enumerate(sorted(LEAVES.items())):
        for i in range(count):
            save(raw / "train" / wn_id / f"{wn_id}_{i + 1}.JPEG", flat((20 * k, 50 * i, 90)), fmt="JPEG", quality=95)
    # Two real entries of ImageNet_CUBirds_duplicates.txt: removed from the records.
    save(raw / "train" / "n01531178" / "n01531178_12730.JPEG", flat(5), fmt="JPEG")
    save(raw / "train" / "n01531178" / "n01531178_8622.JPEG", flat(5), fmt="JPEG")
    (raw / "words.txt").write_text("".join(f"{k}\t{v}\n" for k, v in WORDS.items()))
    (raw / "wordnet.is_a.txt").write_text("".join(f"{p} {c}\n" for p, c in IS_A))
    return raw


def test_ilsvrc_v1_splits_the_wordnet_dag(imagenet_raw, tmp_path):
    convert("ilsvrc_2012", imagenet_raw, tmp_path, lists=LISTS)
    spec = load_spec(tmp_path / "ilsvrc_2012")
    assert spec.kind == HIERARCHICAL
    train, valid, test = (sorted(w for w in LEAVES if w in group) for group in (
        {"n01530575", "n01531178", "n02747177"}, {"n02085620", "n02085782", "n02123045", "n02123159"},
        {"n03085013", "n03793489"}))
    assert [spec.class_names[i] for i in range(9)] == train + valid + test
    assert spec.split_classes == {"train": (0, 1, 2), "valid": (3, 4, 5, 6), "test": (7, 8)}
    assert {c: spec.images_per_class[c] for c in range(9)} == {i: LEAVES[w] for i, w in enumerate(train + valid + test)}
    data = json.loads((tmp_path / "ilsvrc_2012" / "dataset_spec.json").read_text())
    graphs = {s: {n["wn_id"]: (n["children_ids"], n["parents_ids"]) for n in g}
              for s, g in data["split_subgraphs"].items()}
    # Train: animal and the artifact -> instrumentality -> container chain have one child left: collapsed.
    assert graphs["TRAIN"] == {"n00001740": (["n01503061", "n02747177"], []),
                               "n01503061": (["n01530575", "n01531178"], ["n00001740"]),
                               "n01530575": ([], ["n01503061"]), "n01531178": ([], ["n01503061"]),
                               "n02747177": ([], ["n00001740"])}
    assert graphs["VALID"]["n02075296"] == (["n02084071", "n02121808"], [])  # the root has no parents
    assert set(graphs["VALID"]) == {"n02075296", "n02084071", "n02121808", *valid}
    assert graphs["TEST"] == {"n03183080": (["n03085013", "n03793489"], []), "n03085013": ([], ["n03183080"]),
                              "n03793489": ([], ["n03183080"])}
    assert data["images_per_class"]["VALID"]["n02075296"] == 5 and data["images_per_class"]["TRAIN"]["n00001740"] == 4
    assert data["split_subgraphs"]["TRAIN"][0]["words"] == "entity"
    nodes = {n.wn_id: n.leaves for n in spec.internal_nodes["valid"]}
    assert nodes["n02084071"] == (3, 4)  # dog spans Chihuahua and Japanese spaniel


def test_ilsvrc_v2_every_class_in_train_without_duplicates(imagenet_raw, tmp_path):
    # The reference splits/ folder has no ilsvrc file: the WordNet rule applies.
    report = convert("ilsvrc_2012_v2", imagenet_raw, tmp_path, lists=LISTS, splits=SHARED_MD / "splits")
    spec = load_spec(tmp_path / "ilsvrc_2012_v2")
    assert spec.split_classes["train"] == tuple(range(9)) and spec.split_classes["test"] == ()
    assert [spec.class_names[i] for i in range(9)] == sorted(LEAVES)
    goldfinch = sorted(LEAVES).index("n01531178")
    assert spec.images_per_class[goldfinch] == 2 and report.skipped == ()  # duplicates removed, not "unreadable"
    data = json.loads((tmp_path / "ilsvrc_2012_v2" / "dataset_spec.json").read_text())
    train = {n["wn_id"]: n["children_ids"] for n in data["split_subgraphs"]["TRAIN"]}
    assert train["n03575240"] == ["n02747177", "n03183080"]  # container collapsed into its one child
    assert "n00021939" not in train and "n09999999" not in train  # one-child artifact, unrelated synset
    assert data["split_subgraphs"]["VALID"] == [] and data["images_per_class"]["TEST"] == {}
    for class_id, images in records(tmp_path, "ilsvrc_2012_v2").items():
        k = sorted(LEAVES).index(spec.class_names[class_id])
        for i, image in enumerate(images):
            assert_colour(image, (20 * k, 50 * i, 90))


def test_ilsvrc_needs_the_duplicate_lists(imagenet_raw, tmp_path):
    from fewshot_bench.errors import ConfigError

    with pytest.raises(ConfigError, match="ImageNet_CUBirds_duplicates.txt"):
        convert_source("ilsvrc_2012", imagenet_raw, tmp_path, workers=1, progress=False)
    with pytest.raises(ConfigError, match="the class split comes from the WordNet graph"):
        convert_source("ilsvrc_2012", imagenet_raw, tmp_path, lists=LISTS,
                       splits=SHARED_MD / "splits" / "dtd_splits.json")
    with pytest.raises(DataError, match="words.txt"):
        convert_source("ilsvrc_2012", imagenet_raw / "train", tmp_path, lists=LISTS, workers=1, progress=False)
