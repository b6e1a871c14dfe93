"""Evaluation-time image preprocessing shared by the TFDS readers.

VTAB protocol (Zhai et al. 2019, issue 4 item 5): bilinear resize to the
configured size, no crop, no augmentation. Tasks carry ``float32`` images with
values in ``[0, 1]`` and three channels; a backbone maps them into its own
value range (``Backbone.preprocess``).
"""

from __future__ import annotations

from typing import Any


def to_unit_rgb(image: Any, image_size: int, max_value: float = 255.0) -> Any:
    """Map one decoded image ``[h, w, c]`` to ``float32 [image_size, image_size, 3]`` in [0, 1].

    Bilinear resize without crop or antialiasing (VTAB), division by the
    dataset's largest pixel value (255, or 1 for dSprites' binary masks), and
    grayscale (``c == 1``) tiled to three channels. TF graph ops, usable in
    ``tf.data.Dataset.map``.
    """
    import tensorflow as tf

    image = tf.cast(image, tf.float32)
    image = tf.image.resize(image, [image_size, image_size], method="bilinear")
    image = image / max_value
    if image.shape[-1] == 1:
        image = tf.tile(image, [1, 1, 3])
    return tf.ensure_shape(image, [image_size, image_size, 3])
