import numpy as np
import pytest

from fewshot_bench.errors import LearnerError
from fewshot_bench.tasks import Examples, QueryStream, Task, TaskInfo, check_support, fingerprint, median_area


def _examples(n, labels=None, prefix="x"):
    return Examples(np.zeros((n, 4, 4, 3), np.float32),
                    np.arange(n) % 3 if labels is None else np.asarray(labels),
                    tuple(f"{prefix}{i}" for i in range(n)))


def test_examples_take_concat_and_unlabelled():
    ex = _examples(6)
    part = ex.take([4, 1])
    assert part.ids == ("x4", "x1") and part.labels.tolist() == [1, 1]
    both = Examples.concat([part, ex.take([0])])
    assert both.ids == ("x4", "x1", "x0") and len(both) == 3
    assert ex.unlabelled().labels is None and ex.unlabelled().ids == ex.ids


def test_examples_reject_mismatched_lengths():
    with pytest.raises(ValueError, match="must agree"):
        Examples(np.zeros((2, 4, 4, 3)), np.zeros(3), ("a", "b"))


def test_query_stream_is_reiterable_and_chunked():
    stream = QueryStream.from_examples(_examples(7), batch_size=3)
    assert [len(b) for b in stream] == [3, 3, 1]
    assert [b.ids[0] for b in stream] == ["x0", "x3", "x6"]


def test_fingerprint_depends_on_ids_labels_and_roles():
    s, q = _examples(3), _examples(2, prefix="q")
    base = fingerprint(s, [q])
    assert base == fingerprint(s, QueryStream.from_examples(q, 1))  # chunking does not matter
    assert base != fingerprint(s, [_examples(2, labels=[1, 1], prefix="q")])
    assert base != fingerprint(q, [s])
    assert base != fingerprint(s.take([1, 0, 2]), [q])


def test_check_support_names_the_problem():
    check_support(_examples(3), 3)
    with pytest.raises(LearnerError, match=r"classes \[2\]"):
        check_support(_examples(2), 3)
    with pytest.raises(LearnerError, match="empty"):
        check_support(_examples(0), 3)
    with pytest.raises(LearnerError, match="0..1"):
        check_support(_examples(3), 2)


def test_task_info_defaults_to_the_source_name():
    stream = QueryStream.from_examples(_examples(2))
    task = Task(_examples(3), stream, 3, "s", "g", "omniglot", "0", 0)
    assert task.info == TaskInfo("omniglot", "", None)
    given = TaskInfo("mini_dsprites_orientation", "vtab", 4096.0)
    assert Task(_examples(3), stream, 3, "s", "g", "x", "0", 0, info=given).info is given


def test_median_area():
    # areas 6, 20, 100 -> 20; an even count averages the middle two: (2 + 12) / 2 = 7
    assert median_area(np.array([[2, 3], [10, 10], [4, 5]])) == 20.0
    assert median_area(np.array([[1, 2], [3, 4]])) == 7.0
    assert median_area(np.zeros((0, 2))) is None


class CountingLoader:
    """A lazy Examples' loader over known images that records every request."""

    def __init__(self, images):
        self.images, self.calls = images, []

    def __call__(self, indices):
        self.calls.append([int(i) for i in indices])
        return self.images[indices]


def _lazy(n=6):
    images = (np.arange(n * 2 * 2 * 3, dtype=np.float32) / 100).reshape(n, 2, 2, 3)
    load = CountingLoader(images)
    return Examples.lazy(tuple(f"x{i}" for i in range(n)), np.arange(n) % 3, (2, 2, 3), load), load, images


def test_lazy_examples_decode_nothing_until_pixels_are_asked_for():
    ex, load, _ = _lazy()
    part = ex.take([4, 1])
    hidden = ex.unlabelled()
    assert len(ex) == 6 and ex.image_shape == (2, 2, 3) and ex.labels.tolist() == [0, 1, 2, 0, 1, 2]
    assert part.ids == ("x4", "x1") and part.labels.tolist() == [1, 1] and part.image_shape == (2, 2, 3)
    assert hidden.labels is None and hidden.ids == ex.ids
    assert fingerprint(ex, [part]) == fingerprint(_examples(6), [_examples(6).take([4, 1])])  # ids and labels only
    assert load.calls == [] and not (ex.decoded or part.decoded or hidden.decoded)


def test_lazy_images_equal_the_loaded_pixels_and_are_decoded_once():
    ex, load, images = _lazy()
    assert ex.images.dtype == np.float32
    np.testing.assert_array_equal(ex.images, images)
    assert ex.images is ex.images and load.calls == [[0, 1, 2, 3, 4, 5]]
    # the unlabelled view shares the decode; a take of a decoded Examples slices it
    np.testing.assert_array_equal(ex.unlabelled().images, images)
    np.testing.assert_array_equal(ex.take([5, 0]).images, images[[5, 0]])
    np.testing.assert_array_equal(ex.images_at([3]), images[[3]])
    assert load.calls == [[0, 1, 2, 3, 4, 5]]


def test_images_at_decodes_only_the_asked_examples():
    ex, load, images = _lazy()
    np.testing.assert_array_equal(ex.images_at([4, 1]), images[[4, 1]])
    part = ex.take([5, 3, 0])
    np.testing.assert_array_equal(part.images_at([2, 0]), images[[0, 5]])  # through the take
    np.testing.assert_array_equal(part.images, images[[5, 3, 0]])
    assert load.calls == [[4, 1], [0, 5], [5, 3, 0]] and not ex.decoded
    assert ex.images_at([]).shape == (0, 2, 2, 3) and len(load.calls) == 3  # nothing asked, nothing loaded


def test_concat_of_lazy_and_eager_examples():
    ex, _, images = _lazy()
    eager = Examples(np.ones((2, 2, 2, 3), np.float32), np.array([0, 1]), ("e0", "e1"))
    both = Examples.concat([ex.take([2]), eager])
    assert both.ids == ("x2", "e0", "e1") and both.labels.tolist() == [2, 0, 1]
    np.testing.assert_array_equal(both.images, np.concatenate([images[[2]], np.ones((2, 2, 2, 3))]))


def test_lazy_examples_check_lengths_and_the_loaded_shape():
    with pytest.raises(ValueError, match="3 images, 3 ids and 2 labels must agree"):
        Examples.lazy(("a", "b", "c"), np.zeros(2), (2, 2, 3), CountingLoader(np.zeros((3, 2, 2, 3))))
    wrong = Examples.lazy(("a", "b"), None, (4, 4, 3), CountingLoader(np.zeros((2, 2, 2, 3), np.float32)))
    with pytest.raises(ValueError, match=r"shape \(2, 2, 2, 3\) for 2 indices, expected \(2, 4, 4, 3\)"):
        wrong.images


def test_eager_examples_keep_their_array():
    images = np.ones((3, 4, 4, 3), np.float32)
    ex = Examples(images, None, ("a", "b", "c"))
    assert ex.images is images and ex.decoded and ex.image_shape == (4, 4, 3)
    with pytest.raises(AttributeError):
        ex.labels = np.zeros(3)


def test_eager_examples_pickle_and_lazy_loads_are_float32_and_decoded_once_across_threads():
    import pickle
    import threading

    eager = Examples(np.ones((2, 3, 3, 3), np.float32), np.array([0, 1]), ("a", "b"))
    copy = pickle.loads(pickle.dumps(eager))
    np.testing.assert_array_equal(copy.images, eager.images)
    assert copy.ids == eager.ids and copy.take([1]).ids == ("b",)

    calls = []

    def load(indices):
        calls.append(len(indices))
        return np.zeros((len(indices), 2, 2, 3), np.float64)  # the wrong dtype: cast to float32

    lazy = Examples.lazy(("x", "y", "z"), None, (2, 2, 3), load)
    threads = [threading.Thread(target=lambda: lazy.images) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == [3] and lazy.images.dtype == np.float32
