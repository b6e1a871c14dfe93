"""Meta-Dataset converters, the shared machinery: split rules, the WordNet rules, resuming (also after a
real kill), parallel workers, bad input, the consistency check on planted problems, the CLI branch."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_prep.md_convert import add_md_arguments, convert_source, run_prepare_md
from data_prep.md_convert import wordnet
from data_prep.md_convert.splits import read_split_file, seeded_split, split_counts
from data_prep.md_records import example_bytes
from fewshot_bench.datasets.meta_dataset.describe import check_source
from fewshot_bench.datasets.meta_dataset.reader import SourceReader
from fewshot_bench.datasets.meta_dataset.spec import load_spec
from fewshot_bench.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[1]
SPLITS_DIR = REPO.parent / "shared" / "meta_dataset" / "splits"
# MSCOCO categories in the order of instances_train2017.json (category ids 1..90 with gaps).
COCO = ("person,bicycle,car,motorcycle,airplane,bus,train,truck,boat,traffic light,fire hydrant,stop sign,"
        "parking meter,bench,bird,cat,dog,horse,sheep,cow,elephant,bear,zebra,giraffe,backpack,umbrella,handbag,"
        "tie,suitcase,frisbee,skis,snowboard,sports ball,kite,baseball bat,baseball glove,skateboard,surfboard,"
        "tennis racket,bottle,wine glass,cup,fork,knife,spoon,bowl,banana,apple,sandwich,orange,broccoli,carrot,"
        "hot dog,pizza,donut,cake,chair,couch,potted plant,bed,dining table,toilet,tv,laptop,mouse,remote,"
        "keyboard,cell phone,microwave,oven,toaster,sink,refrigerator,book,clock,vase,scissors,teddy bear,"
        "hair drier,toothbrush").split(",")
TEXTURES = ["banded", "blotchy", "braided", "bubbly", "bumpy", "chequered"]


def dtd_tree(raw: Path, images: int = 3, size: int = 16) -> Path:
    for k, texture in enumerate(TEXTURES):
        for i in range(images):
            path = raw / "images" / texture / f"{texture}_{i:04d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((size, size, 3), (40 * k, 60 * i, 128), np.uint8)).save(path, quality=90)
    return raw


def snapshot(dest: Path) -> dict[str, bytes]:
    """The bytes of every file of a converted source except the resume markers."""
    return {p.name: p.read_bytes() for p in sorted(dest.iterdir()) if p.is_file()}


# ---------------------------------------------------------------- protocol rules

def test_split_counts_follow_the_reference():
    assert split_counts("aircraft", 100) == (70, 15, 15)
    assert split_counts("dtd", 47) == (33, 7, 7)          # not int(0.7 * 47) = 32: the reference's own counts
    assert split_counts("fungi", 1394) == (994, 200, 200)
    assert split_counts("dtd", 10) == (7, 1, 2)           # int(7.0), int(8.5) - 7, rest
    assert split_counts("cu_birds", 4) == (2, 1, 1)       # int(2.8), int(3.4) - 2, rest
    assert split_counts("mscoco", 5) == (0, 2, 3)
    assert split_counts("traffic_sign", 3) == (0, 0, 3)


@pytest.mark.parametrize("source", ["aircraft", "cu_birds", "dtd", "fungi", "quickdraw", "vgg_flower", "mscoco"])
def test_the_seeded_rule_rebuilds_the_reference_split_files(source):
    reference = read_split_file(SPLITS_DIR, source)
    names = [n for split in reference.values() for n in split]
    candidates = COCO if source == "mscoco" else sorted(names)
    assert sorted(candidates) == sorted(names)
    counts = split_counts(source, len(names))
    assert seeded_split(candidates, counts, seed=22) == reference
    assert seeded_split(candidates, counts, seed=23) != reference


def test_seeded_split_small_case():
    # RandomState(22).choice(4, 3, replace=False) -> trainval; the rest is test; then train among trainval.
    rng = np.random.RandomState(22)
    trainval = rng.choice(4, 3, replace=False)
    train = rng.choice(trainval, 2, replace=False)
    names = ["a", "b", "c", "d"]
    expected = {"train": [names[i] for i in train], "valid": [names[i] for i in sorted(set(trainval) - set(train))],
                "test": [names[i] for i in sorted(set(range(4)) - set(trainval))]}
    assert seeded_split(names, (2, 1, 1), 22) == expected
    with pytest.raises(ConfigError, match="do not add up"):
        seeded_split(names, (2, 1, 2))


def test_wordnet_collapse_and_splits():
    # r -> a -> b -> {x, y} and r -> c -> z: the one-child nodes a and c go; q (a second parent of x) has
    # one child once the graph is restricted to the leaves' ancestors, so it goes too.
    children = {"r": {"a", "c"}, "a": {"b"}, "b": {"x", "y"}, "c": {"z"}, "q": {"x", "w"}, "s": {"r"}}
    graph = wordnet.sampling_graph(["x", "y", "z"], children)
    assert graph == {"r": frozenset({"b", "z"}), "b": frozenset({"x", "y"}), "x": frozenset(), "y": frozenset(),
                     "z": frozenset()}
    assert wordnet.sampling_graph(["x", "y"], children, root="a") == {
        "b": frozenset({"x", "y"}), "x": frozenset(), "y": frozenset()}  # ancestors above the root dropped
    # A root with one child disappears; its child becomes the root.
    assert wordnet.collapse({"r": {"a"}, "a": {"x", "y"}, "x": set(), "y": set()}) == {
        "a": frozenset({"x", "y"}), "x": frozenset(), "y": frozenset()}
    # Leaves below both roots alternate, valid first, in sorted order.
    dag = {"top": frozenset({"v", "t"}), "v": frozenset({"l1", "l2", "l3"}), "t": frozenset({"l2", "l3", "l4"}),
           "l1": frozenset(), "l2": frozenset(), "l3": frozenset(), "l4": frozenset(), "l5": frozenset()}
    assert wordnet.split_leaves(dag, "v", "t") == {"train": {"l5"}, "valid": {"l1", "l2"}, "test": {"l3", "l4"}}
    with pytest.raises(DataError, match="valid root n02075296"):
        wordnet.split_leaves(dag, "n02075296", "t")


# ---------------------------------------------------------------- resuming and parallel workers

def test_restart_skips_complete_classes_and_redoes_the_others(tmp_path):
    raw = dtd_tree(tmp_path / "dtd")
    out = tmp_path / "out"
    first = convert_source("dtd", raw, out, workers=1, progress=False)
    assert first.written == tuple(range(6)) and first.reused == () and first.images == 18
    dest = out / "dtd"
    original = snapshot(dest)
    again = convert_source("dtd", raw, out, workers=1, progress=False)
    assert again.written == () and again.reused == tuple(range(6))
    assert snapshot(dest) == original
    # Plant the states a crash or a damaged copy leaves behind.
    (dest / "0.tfrecords").unlink()                                   # never renamed into place
    data = (dest / "1.tfrecords").read_bytes()
    (dest / "1.tfrecords").write_bytes(data[:-10])                    # truncated after its marker
    (dest / ".md_convert" / "2.json").unlink()                        # renamed, killed before the marker
    (dest / "3.tfrecords.tmp").write_bytes(b"half a class")           # a partial write
    (dest / "dataset_spec.json").unlink()
    resumed = convert_source("dtd", raw, out, workers=1, progress=False)
    assert resumed.written == (0, 1, 2) and resumed.reused == (3, 4, 5)
    assert snapshot(dest) == original
    # Another split: classes whose content changes are redone, ids the plan lost are deleted.
    split = tmp_path / "dtd_splits.json"
    split.write_text(json.dumps({"train": ["bumpy", "banded"], "valid": ["blotchy"], "test": ["chequered"]}))
    other = convert_source("dtd", raw, out, splits=split, workers=1, progress=False)
    assert other.num_classes == 4 and sorted(p.name for p in dest.glob("*.tfrecords")) == [
        f"{i}.tfrecords" for i in range(4)]
    assert other.unassigned == ("braided", "bubbly")
    assert check_source(out, "dtd") == []


def _wait_for(condition, process, what: str, limit: float = 180.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"the conversion ended (code {process.returncode}) before {what}: "
                                 f"{process.stderr.read().decode()[-2000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def _open_for_writing(fifo: Path, holder: list[int]) -> bool:
    """Open the FIFO's writing end once a reader waits on it; keep it open so the reader blocks on read."""
    try:
        holder.append(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:  # ENXIO: nobody reads it yet
        return False
    return True


def test_a_conversion_killed_midway_resumes_to_the_same_bytes(tmp_path):
    """Two worker processes convert; one blocks on a FIFO posing as an image; the whole process group is
    killed with SIGKILL; the FIFO becomes a real image and the conversion resumes in this process."""
    raw = dtd_tree(tmp_path / "dtd")
    blocked = raw / "images" / "bubbly" / "bubbly_9999.jpg"   # last file of its class
    os.mkfifo(blocked)
    out = tmp_path / "out"
    dest = out / "dtd"
    code = (f"from data_prep.md_convert import convert_source; "
            f"convert_source('dtd', {str(raw)!r}, {str(out)!r}, workers=2, progress=False)")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=REPO, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    writer: list[int] = []
    try:
        _wait_for(lambda: _open_for_writing(blocked, writer), process, "a worker opened the FIFO")
        _wait_for(lambda: len(list((dest / ".md_convert").glob("*.json"))) == len(TEXTURES) - 1, process,
                  "the other classes were complete")
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        for fd in writer:
            os.close(fd)
    assert not (dest / "dataset_spec.json").exists()             # killed midway: no spec yet
    blocked.unlink()
    Image.fromarray(np.full((16, 16, 3), (10, 200, 30), np.uint8)).save(blocked, format="JPEG", quality=90)
    resumed = convert_source("dtd", raw, out, workers=1, progress=False)
    spec = load_spec(dest)
    bubbly_id = [c for c, n in spec.class_names.items() if n == "bubbly"][0]
    assert resumed.written == (bubbly_id,) and len(resumed.reused) == len(TEXTURES) - 1
    assert spec.images_per_class[bubbly_id] == 4
    killed = snapshot(dest)
    shutil.move(dest, tmp_path / "killed")
    fresh = convert_source("dtd", raw, out, workers=1, progress=False)
    assert fresh.written == tuple(range(len(TEXTURES)))
    assert snapshot(dest) == killed                               # byte for byte, spec included


# ---------------------------------------------------------------- bad input

def test_a_raw_folder_in_the_wrong_layout_names_the_expected_one(tmp_path):
    (tmp_path / "dtd" / "textures").mkdir(parents=True)
    with pytest.raises(DataError, match=r"missing images\. Expected:\n  <raw>/images/<texture>/\*\.jpg"):
        convert_source("dtd", tmp_path / "dtd", tmp_path / "out", workers=1, progress=False)
    (tmp_path / "air" / "data" / "images").mkdir(parents=True)
    with pytest.raises(DataError) as error:
        convert_source("aircraft", tmp_path / "air", tmp_path / "out", workers=1, progress=False)
    message = str(error.value)
    assert "missing data/images_box.txt, data/images_variant_trainval.txt, data/images_variant_test.txt" in message
    assert "<raw>/data/images_box.txt" in message
    with pytest.raises(DataError, match="does not exist"):
        convert_source("omniglot", tmp_path / "nowhere", tmp_path / "out", workers=1, progress=False)
    with pytest.raises(ConfigError, match="unknown Meta-Dataset source 'imagenet': use one of omniglot"):
        convert_source("imagenet", tmp_path, tmp_path / "out")


def test_unreadable_images_are_reported_and_skipped_with_a_count(tmp_path):
    raw = dtd_tree(tmp_path / "dtd")
    good = (raw / "images" / "braided" / "braided_0000.jpg").read_bytes()
    truncated = raw / "images" / "braided" / "braided_0001.jpg"
    truncated.write_bytes(good[: len(good) // 2])
    text = raw / "images" / "chequered" / "notes.jpg"
    text.write_text("not an image")
    report = convert_source("dtd", raw, tmp_path / "out", workers=1, progress=False)
    assert sorted(image for image, _ in report.skipped) == sorted([str(truncated), str(text)])
    assert all("cannot decode" in reason for _, reason in report.skipped)
    assert report.images == 19 - 2  # 18 images and a text file, 2 of them skipped
    assert "2 unreadable images skipped" in report.summary()
    spec = load_spec(tmp_path / "out" / "dtd")
    counts = {spec.class_names[c]: n for c, n in spec.images_per_class.items()}
    assert counts["braided"] == 2 and counts["chequered"] == 3
    assert check_source(tmp_path / "out", "dtd") == []
    # The skips are remembered by the resume markers: a restart reports them again.
    assert convert_source("dtd", raw, tmp_path / "out", workers=1, progress=False).skipped == report.skipped


def test_a_split_file_naming_absent_classes_is_refused_with_the_names(tmp_path):
    raw = dtd_tree(tmp_path / "dtd")
    split = tmp_path / "dtd_splits.json"
    split.write_text(json.dumps({"train": ["banded", "zigzagged"], "valid": ["woven"], "test": ["bumpy"]}))
    with pytest.raises(DataError, match=r"names 2 dtd classes absent from the raw data in .*'zigzagged', 'woven'"):
        convert_source("dtd", raw, tmp_path / "out", splits=split, workers=1, progress=False)
    split.write_text(json.dumps({"train": ["banded"], "valid": ["banded"], "test": []}))
    with pytest.raises(ConfigError, match="lists class 'banded' twice"):
        convert_source("dtd", raw, tmp_path / "out", splits=split, workers=1, progress=False)
    split.write_text(json.dumps({"train": ["banded"], "test": []}))
    with pytest.raises(ConfigError, match="exactly the keys train, valid and test"):
        convert_source("dtd", raw, tmp_path / "out", splits=split, workers=1, progress=False)
    with pytest.raises(ConfigError, match="dtd_splits.json does not exist"):
        convert_source("dtd", raw, tmp_path / "out", splits=tmp_path / "missing" / "dtd_splits.json",
                       workers=1, progress=False)
    # A folder of split files works too (the reference's splits/ folder).
    folder = tmp_path / "splits"
    folder.mkdir()
    (folder / "dtd_splits.json").write_text(json.dumps({"train": TEXTURES[:4], "valid": ["bumpy"],
                                                        "test": ["chequered"]}))
    report = convert_source("dtd", raw, tmp_path / "out", splits=folder, workers=1, progress=False)
    assert load_spec(tmp_path / "out" / "dtd").class_names[5] == "chequered" and report.unassigned == ()


# ---------------------------------------------------------------- consistency check

def test_the_check_finds_planted_problems_each_with_its_file(tmp_path):
    raw = dtd_tree(tmp_path / "dtd")
    out = tmp_path / "out"
    convert_source("dtd", raw, out, workers=1, progress=False)
    dest = out / "dtd"
    assert check_source(out, "dtd") == []
    reader = SourceReader(dest)
    records = {c: reader.read_raw(c, range(3)) for c in range(6)}

    def rewrite(class_id, items):
        import tensorflow as tf
        with tf.io.TFRecordWriter(str(dest / f"{class_id}.tfrecords")) as writer:
            for item in items:
                writer.write(item)

    (dest / "0.tfrecords").unlink()                                           # missing class
    rewrite(1, records[1][:2])                                                # count differs from the spec
    rewrite(2, records[2][:2] + [example_bytes(b"\xff\xd8 not a jpeg", 2)])   # image does not decode
    rewrite(3, records[3][:2] + [records[4][0]])                              # label 4 in class 3
    data = (dest / "5.tfrecords").read_bytes()
    (dest / "5.tfrecords").write_bytes(data[:-7])                             # truncated
    (dest / "9.tfrecords").write_bytes(b"")                                   # not in the spec
    problems = check_source(out, "dtd")
    text = "\n".join(problems)
    assert len(problems) == 6, text
    assert f"class 0 ({dest / '0.tfrecords'}): the class file is missing" in problems[0]
    assert f"({dest / '1.tfrecords'}) holds 2 records but the spec" in problems[1]
    assert f"class 2 ({dest / '2.tfrecords'}) record 2: the image does not decode" in problems[2]
    assert f"class 3 ({dest / '3.tfrecords'}) record 2 has label 4" in problems[3]
    assert f"{dest / '5.tfrecords'} is truncated" in problems[4]
    assert f"{dest / '9.tfrecords'} is not a class of the spec" in problems[5]


# ---------------------------------------------------------------- command line

def prepare_parser() -> argparse.ArgumentParser:
    """The ``prepare`` options of fewshot_bench.cli, plus the md ones."""
    parser = argparse.ArgumentParser()
    parser.add_argument("what")
    parser.add_argument("--out")
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--records")
    parser.add_argument("--source")
    add_md_arguments(parser)
    return parser


def test_prepare_md_converts_then_checks(tmp_path, capsys):
    raw = dtd_tree(tmp_path / "dtd")
    parser = prepare_parser()
    args = parser.parse_args(["md", "--source", "dtd", "--raw", str(raw), "--out", str(tmp_path / "out"),
                              "--workers", "1", "--seed", "3"])
    assert args.seed == 3 and parser.parse_args(["md"]).seed == 22 and parser.parse_args(["md"]).workers == 2
    assert run_prepare_md(args) == 0
    captured = capsys.readouterr()
    assert "dtd: 6 classes, 18 images" in captured.out and "18/18" in captured.err  # summary, progress bar
    spec = load_spec(tmp_path / "out" / "dtd")
    assert [spec.class_names[i] for i in range(6)] == [n for s in seeded_split(TEXTURES, (4, 1, 1), 3).values()
                                                       for n in s]
    check = parser.parse_args(["md", "--check", "--records", str(tmp_path / "out"), "--source", "dtd"])
    assert run_prepare_md(check) == 0
    assert "spec and records agree" in capsys.readouterr().out
    (tmp_path / "out" / "dtd" / "4.tfrecords").unlink()
    assert run_prepare_md(check) == 1
    assert "4.tfrecords): the class file is missing" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="--source NAME --raw DIR --out ROOT"):
        run_prepare_md(parser.parse_args(["md", "--source", "dtd"]))
