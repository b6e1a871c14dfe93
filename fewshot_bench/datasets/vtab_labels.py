"""VTAB label derivations (Zhai et al. 2019, appendix; issue 4 item 2).

Each rule maps one decoded TFDS example (a dict of tensors) to an integer
label with TF graph ops, so it runs inside ``tf.data.Dataset.map`` and,
eagerly, on hand-made examples in the tests.
"""

from __future__ import annotations

from typing import Any, Callable

# clevr closest_object_distance: depth thresholds of the 6 classes.
CLEVR_DISTANCE_THRESHOLDS = (0.0, 8.0, 8.5, 9.0, 9.5, 10.0, 100.0)
# kitti closest_vehicle_distance: 3 distance classes plus "no vehicle".
KITTI_DISTANCE_THRESHOLDS = (-100.0, 8.0, 20.0, 999.0)
KITTI_NO_VEHICLE_DEPTH = 1000.0  # above every threshold: the 4th class
KITTI_VEHICLE_TYPES = 3          # types 0, 1, 2 = Car, Van, Truck
CLEVR_MIN_OBJECTS = 3            # every CLEVR scene holds 3 to 10 objects

# dSprites / smallNORB: classes of each TFDS label attribute.
DSPRITES_CLASSES = {"label_shape": 3, "label_scale": 6, "label_orientation": 40,
                    "label_x_position": 32, "label_y_position": 32}
SMALLNORB_CLASSES = {"label_category": 5, "label_elevation": 9, "label_azimuth": 18,
                     "label_lighting": 6}


def interval_index(value: Any, thresholds: tuple[float, ...]) -> Any:
    """Index of the last threshold strictly below ``value`` (VTAB's distance binning)."""
    import tensorflow as tf

    below = tf.constant(thresholds, tf.float32) < tf.cast(value, tf.float32)
    return tf.reduce_max(tf.where(below)[:, 0])


def clevr_count_all(example: dict) -> Any:
    """CLEVR count_all: number of objects - 3 (scenes hold 3..10 objects: 8 classes)."""
    import tensorflow as tf

    return tf.cast(tf.size(example["objects"]["size"]), tf.int64) - CLEVR_MIN_OBJECTS


def clevr_closest_object_distance(example: dict) -> Any:
    """CLEVR closest_object_distance: interval of the smallest ``pixel_coords`` depth (6 classes)."""
    import tensorflow as tf

    depth = tf.reduce_min(example["objects"]["pixel_coords"][:, 2])
    return interval_index(depth, CLEVR_DISTANCE_THRESHOLDS)


def kitti_closest_vehicle_distance(example: dict) -> Any:
    """KITTI closest_vehicle_distance: interval of the nearest Car/Van/Truck depth; no vehicle = class 3."""
    import tensorflow as tf

    objects = example["objects"]
    depths = tf.boolean_mask(objects["location"][:, 2], objects["type"] < KITTI_VEHICLE_TYPES)
    depths = tf.concat([tf.cast(depths, tf.float32), [KITTI_NO_VEHICLE_DEPTH]], axis=0)
    return interval_index(tf.reduce_min(depths), KITTI_DISTANCE_THRESHOLDS)


def binned_attribute(attribute: str, original_classes: int, num_classes: int) -> Callable[[dict], Any]:
    """dSprites rule: ``floor(value / (original_classes / num_classes))`` (x-position 32 -> 16, orientation 40 -> 16)."""
    factor = original_classes / num_classes

    def label(example: dict) -> Any:
        import tensorflow as tf

        return tf.cast(tf.math.floordiv(tf.cast(example[attribute], tf.float32), factor), tf.int64)

    label.__name__ = f"binned_{attribute}_{num_classes}"
    return label


def attribute(name: str) -> Callable[[dict], Any]:
    """The label stored under ``name`` as is (smallNORB azimuth and elevation)."""

    def label(example: dict) -> Any:
        return example[name]

    label.__name__ = f"attribute_{name}"
    return label
