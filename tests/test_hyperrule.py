"""BiT-HyperRule and its crop/flip exceptions, against hand-computed cases (no TensorFlow needed)."""

import pytest

from fewshot_bench.errors import ConfigError
from fewshot_bench.learners.hyperrule import AugmentFlags, HyperParams, augment_flags, hyperrule

SMALL_AREA, LARGE_AREA = 32 * 32, 224 * 224


def test_small_dataset_regime_vtab_1k():
    # 1000 examples (VTAB-1k), 32x32 images: 500 steps, warmup 100, decays at 200/300/400, no MixUp.
    assert hyperrule(1000, SMALL_AREA) == HyperParams(resize=160, crop=128, steps=500, warmup=100,
                                                      decay_steps=(200, 300, 400), lr=0.003, mixup_alpha=0.0,
                                                      batch_size=512)


def test_medium_dataset_regime():
    hp = hyperrule(50_000, LARGE_AREA)
    assert (hp.resize, hp.crop) == (512, 480)
    assert (hp.steps, hp.warmup, hp.decay_steps) == (10_000, 500, (3_000, 6_000, 9_000))
    assert hp.mixup_alpha == 0.1


def test_large_dataset_regime():
    hp = hyperrule(1_000_000, LARGE_AREA)
    assert (hp.steps, hp.warmup, hp.decay_steps, hp.mixup_alpha) == (20_000, 500, (6_000, 12_000, 18_000), 0.1)


@pytest.mark.parametrize("train_size, steps, mixup", [
    (1, 500, 0.0), (19_999, 500, 0.0), (20_000, 10_000, 0.1), (499_999, 10_000, 0.1), (500_000, 20_000, 0.1)])
def test_regime_boundaries(train_size, steps, mixup):
    hp = hyperrule(train_size, SMALL_AREA)
    assert (hp.steps, hp.mixup_alpha) == (steps, mixup)


@pytest.mark.parametrize("area, resolution", [
    (95 * 96, (160, 128)), (96 * 96 - 1, (160, 128)), (96 * 96, (512, 480)), (LARGE_AREA, (512, 480))])
def test_resolution_by_image_area(area, resolution):
    hp = hyperrule(1000, area)
    assert (hp.resize, hp.crop) == resolution


def test_learning_rate_scales_with_batch():
    assert hyperrule(1000, SMALL_AREA, batch_size=64).lr == pytest.approx(0.003 * 64 / 512)  # 0.000375
    assert hyperrule(1000, SMALL_AREA, batch_size=1024, base_lr=0.01).lr == pytest.approx(0.02)


def test_crop_cap_shrinks_resize_in_proportion():
    small = hyperrule(1000, SMALL_AREA, max_crop=64)
    assert (small.resize, small.crop) == (80, 64)            # 160 * 64/128
    large = hyperrule(1000, LARGE_AREA, max_crop=64)
    assert (large.resize, large.crop) == (68, 64)            # round(512 * 64/480) = round(68.27)
    assert (hyperrule(1000, SMALL_AREA, max_crop=200).crop) == 128  # a cap above the rule changes nothing


def test_schedule_scale():
    hp = hyperrule(1000, SMALL_AREA, schedule_scale=0.1)
    assert (hp.steps, hp.warmup, hp.decay_steps) == (50, 10, (20, 30, 40))
    tiny = hyperrule(1000, SMALL_AREA, schedule_scale=0.001)  # never below one step
    assert (tiny.steps, tiny.warmup, tiny.decay_steps) == (1, 1, (1, 1, 1))


@pytest.mark.parametrize("kwargs", [dict(train_size=0, image_area=100.0), dict(train_size=10, image_area=0.0),
                                    dict(train_size=10, image_area=100.0, batch_size=0),
                                    dict(train_size=10, image_area=100.0, schedule_scale=0.0),
                                    dict(train_size=10, image_area=100.0, max_crop=0)])
def test_bad_arguments(kwargs):
    with pytest.raises(ConfigError, match="BiT-HyperRule"):
        hyperrule(**kwargs)


BOTH, NO_CROP, NO_FLIP, NEITHER = AugmentFlags(True, True), AugmentFlags(False, True), AugmentFlags(True, False), \
    AugmentFlags(False, False)


@pytest.mark.parametrize("name, flags", [
    # VTAB-1k task names as fewshot_bench.datasets.vtab registers them
    ("caltech101", BOTH), ("cifar(num_classes=100)", BOTH), ("dtd", BOTH), ("oxford_flowers102", BOTH),
    ("oxford_iiit_pet", BOTH), ("svhn", BOTH), ("sun397", BOTH), ("patch_camelyon", BOTH), ("eurosat", BOTH),
    ("resisc45", BOTH), ("diabetic_retinopathy(config='btgraham-300')", BOTH),
    ("clevr(task='count_all')", NO_CROP), ("clevr(task='closest_object_distance')", BOTH), ("dmlab", BOTH),
    ("kitti(task='closest_vehicle_distance')", BOTH),
    ("dsprites(predicted_attribute='label_x_position', num_classes=16)", NEITHER),
    ("dsprites(predicted_attribute='label_orientation', num_classes=16)", NO_FLIP),
    ("smallnorb(predicted_attribute='label_azimuth')", NO_FLIP),
    ("smallnorb(predicted_attribute='label_elevation')", BOTH),
    # mini tasks, bare dataset names (image-id prefixes: the union of a dataset's exceptions), MD sources
    ("mini_dsprites_location", NEITHER), ("mini_dsprites_orientation", NO_FLIP), ("mini_digits", BOTH),
    ("dsprites", NEITHER), ("mini_dsprites", NEITHER), ("clevr", NO_CROP), ("smallnorb", NO_FLIP),
    ("omniglot", BOTH), ("", BOTH),
])
def test_augment_flags(name, flags):
    assert augment_flags(name) == flags
