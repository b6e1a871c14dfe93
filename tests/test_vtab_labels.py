"""VTAB label derivations on hand-made examples (expected labels computed by hand)."""

from __future__ import annotations

import numpy as np
import pytest

from fewshot_bench.datasets import vtab_labels as labels

tf = pytest.importorskip("tensorflow")


def clevr_example(depths):
    """A CLEVR scene whose objects have these pixel_coords depths."""
    n = len(depths)
    coords = np.zeros((n, 3), np.float32)
    coords[:, 2] = depths
    return {"objects": {"size": tf.zeros([n], tf.int64), "pixel_coords": tf.constant(coords)}}


@pytest.mark.parametrize("num_objects, label", [(3, 0), (4, 1), (7, 4), (10, 7)])
def test_clevr_count_all(num_objects, label):
    assert int(labels.clevr_count_all(clevr_example([9.0] * num_objects))) == label


@pytest.mark.parametrize("depths, label", [
    ([7.0, 12.0, 11.0], 0),        # 0 < 7 <= 8
    ([8.0, 15.0, 9.0], 0),         # the bound 8.0 itself is still class 0 (8.0 is not < 8.0)
    ([13.0, 8.2, 9.9], 1),         # smallest depth wins: 8.2 in (8.0, 8.5]
    ([8.7, 8.9, 9.0], 2),
    ([9.2, 11.0, 10.5], 3),
    ([9.7, 9.8, 9.9], 4),
    ([10.0, 20.0, 30.0], 4),       # (9.5, 10.0]
    ([12.0, 14.0, 16.0], 5),       # beyond 10
])
def test_clevr_closest_object_distance(depths, label):
    assert int(labels.clevr_closest_object_distance(clevr_example(depths))) == label


def kitti_example(objects):
    """A KITTI frame with (type, depth) objects; type 0 Car, 1 Van, 2 Truck, 3 Pedestrian, 5 Cyclist."""
    types = np.array([t for t, _ in objects], np.int64)
    location = np.zeros((len(objects), 3), np.float32)
    location[:, 2] = [z for _, z in objects]
    return {"objects": {"type": tf.constant(types, tf.int64), "location": tf.constant(location)}}


@pytest.mark.parametrize("objects, label", [
    ([(0, 5.0)], 0),                        # car at 5 m
    ([(1, 10.0)], 1),                       # van at 10 m
    ([(2, 25.0)], 2),                       # truck at 25 m
    ([], 3),                                # no object at all: "no vehicle"
    ([(3, 2.0), (0, 30.0)], 2),             # the pedestrian is ignored
    ([(5, 3.0), (4, 4.0), (7, 1.0)], 3),    # only non-vehicles: "no vehicle"
    ([(0, 50.0), (2, 15.0)], 1),            # the nearest vehicle counts
    ([(0, 8.0)], 0),                        # 8 m is the upper bound of class 0
    ([(0, 20.0001)], 2),
])
def test_kitti_closest_vehicle_distance(objects, label):
    assert int(labels.kitti_closest_vehicle_distance(kitti_example(objects))) == label


@pytest.mark.parametrize("attribute, values, expected", [
    ("label_x_position", [0, 1, 2, 3, 30, 31, 16, 17], [0, 0, 1, 1, 15, 15, 8, 8]),       # 32 -> 16: /2
    ("label_orientation", [0, 2, 3, 5, 39, 20, 37, 12], [0, 0, 1, 2, 15, 8, 14, 4]),      # 40 -> 16: /2.5
])
def test_dsprites_binning(attribute, values, expected):
    rule = labels.binned_attribute(attribute, labels.DSPRITES_CLASSES[attribute], 16)
    got = [int(rule({attribute: tf.constant(v, tf.int64)})) for v in values]
    assert got == expected
    assert all(0 <= g < 16 for g in got)


def test_smallnorb_attributes_are_taken_as_given():
    example = {"label_azimuth": tf.constant(17, tf.int64), "label_elevation": tf.constant(8, tf.int64)}
    assert int(labels.attribute("label_azimuth")(example)) == 17
    assert int(labels.attribute("label_elevation")(example)) == 8
    assert labels.SMALLNORB_CLASSES["label_azimuth"] == 18 and labels.SMALLNORB_CLASSES["label_elevation"] == 9


def test_rules_run_inside_tf_data():
    ds = tf.data.Dataset.from_tensor_slices({"label_x_position": tf.constant([5, 31], tf.int64)})
    rule = labels.binned_attribute("label_x_position", 32, 16)
    assert list(ds.map(rule).as_numpy_iterator()) == [2, 15]
