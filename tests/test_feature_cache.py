"""The persistent feature cache on its own (numpy + SQLite, no TensorFlow).

Covers: key parts, hit / miss, reuse by another process, two concurrent
writers, a writer killed at each stage of a write, corrupt and truncated
shards (checksum), the index itself damaged, and pruning.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from fewshot_bench.backbones import feature_cache as fc
from fewshot_bench.backbones.feature_cache import FeatureCache, describe, namespace_key, namespace_parts, prune, verify
from fewshot_bench.errors import DataError

REPO = Path(__file__).resolve().parents[1]
DIM = 6


def parts(**change):
    base = dict(backbone_id="net@abc", image_shape=(32, 32, 3), value_range=(-1.0, 1.0), layers=("embedding",),
                pooling="avg", precision="float32")
    base.update(change)
    return namespace_parts(**base)


def value(image_id: str) -> np.ndarray:
    """A deterministic feature row for an id (what any writer computes for it)."""
    seed = sum(ord(c) * (i + 1) for i, c in enumerate(image_id))
    return np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)


def rows(ids):
    return np.stack([value(i) for i in ids])


def run_python(code: str, *args: str, wait: bool = True):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    command = [sys.executable, "-c", textwrap.dedent(code), *args]
    if wait:
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# ---- keys ----

def test_every_key_part_changes_the_namespace():
    base = namespace_key(parts())
    assert namespace_key(parts()) == base
    changed = [parts(backbone_id="net@abd"), parts(backbone_id="other@abc"), parts(image_shape=(64, 64, 3)),
               parts(value_range=(0.0, 1.0)), parts(layers=("embedding", "block1")),
               parts(layers=("block1", "embedding")), parts(pooling="max"), parts(precision="mixed_float16"),
               namespace_parts("net@abc", (32, 32, 3), (-1.0, 1.0), ("embedding",), "avg", "float32",
                               code_version=fc.CODE_VERSION + 1)]
    keys = {namespace_key(p) for p in changed}
    assert base not in keys and len(keys) == len(changed)


def test_code_version_default_is_read_when_called(monkeypatch):
    monkeypatch.setattr(fc, "CODE_VERSION", fc.CODE_VERSION + 7)
    assert parts()["code_version"] == fc.CODE_VERSION


# ---- hit / miss ----

def test_miss_then_hit_in_memory_and_after_flush(tmp_path):
    ns = FeatureCache(tmp_path).namespace(parts(), flush_rows=100)
    ids = [f"d/train/{i}" for i in range(10)]
    got, found = ns.lookup(ids)
    assert got is None and not found.any()
    ns.put(ids[:6], rows(ids[:6]))
    got, found = ns.lookup(ids)
    assert found.tolist() == [True] * 6 + [False] * 4
    np.testing.assert_array_equal(got[:6], rows(ids[:6]))
    assert not list((tmp_path / ns.key).glob("*.npy"))  # still buffered
    ns.flush()
    assert len(list((tmp_path / ns.key).glob("*.npy"))) == 1
    fresh = FeatureCache(tmp_path).namespace(parts())
    got, found = fresh.lookup(ids[::-1])
    assert found.tolist() == [False] * 4 + [True] * 6
    np.testing.assert_array_equal(got[4:], rows(ids[:6])[::-1])
    assert (fresh.stats.hits, fresh.stats.misses, fresh.stats.corrupt) == (6, 4, 0)


def test_other_namespace_does_not_see_entries(tmp_path):
    cache = FeatureCache(tmp_path)
    ns = cache.namespace(parts())
    ns.put(["a", "b"], rows(["a", "b"]))
    ns.flush()
    for other in (parts(pooling="max"), parts(image_shape=(64, 64, 3)), parts(backbone_id="net@zzz")):
        assert not cache.namespace(other).lookup(["a", "b"])[1].any()


def test_buffer_is_flushed_every_flush_rows_and_at_exit(tmp_path):
    ns = FeatureCache(tmp_path).namespace(parts(), flush_rows=4)
    ids = [f"x{i}" for i in range(10)]
    ns.put(ids, rows(ids))  # one put of 10 rows -> one shard
    ns.put(["y"], rows(["y"]))
    assert len(list((tmp_path / ns.key).glob("*.npy"))) == 1
    code = """
        import sys, numpy as np
        from fewshot_bench.backbones.feature_cache import FeatureCache, namespace_parts
        parts = namespace_parts("net@abc", (32, 32, 3), (-1.0, 1.0), ("embedding",), "avg", "float32")
        ns = FeatureCache(sys.argv[1]).namespace(parts, flush_rows=1000)
        ns.put(["late"], np.full((1, 6), 3.0, np.float32))  # never flushed explicitly
    """
    assert run_python(code, str(tmp_path)).returncode == 0
    got, found = FeatureCache(tmp_path).namespace(parts()).lookup(["late", "x3", "y"])
    assert found.tolist() == [True, True, False]  # "y" is still buffered in this process
    np.testing.assert_array_equal(got[0], np.full(6, 3.0))


def test_rows_buffered_across_a_prune_stay_visible(tmp_path):
    ns = FeatureCache(tmp_path).namespace(parts())
    ns.put(["p0"], rows(["p0"]))
    assert prune(tmp_path, everything=True).namespaces == [ns.key]
    ns.put(["p1"], rows(["p1"]))
    ns.flush()
    (info,) = describe(tmp_path)
    assert (info.key, info.entries, info.dim) == (ns.key, 2, DIM)


# ---- concurrency and interruption ----

WRITER = """
    import sys, time, numpy as np
    from pathlib import Path
    from fewshot_bench.backbones.feature_cache import FeatureCache, namespace_parts
    sys.path.insert(0, sys.argv[3])
    from test_feature_cache import rows
    root, name = sys.argv[1], sys.argv[2]
    parts = namespace_parts("net@abc", (32, 32, 3), (-1.0, 1.0), ("embedding",), "avg", "float32")
    ns = FeatureCache(root).namespace(parts, flush_rows=5)
    go = Path(root) / "go"
    while not go.exists():
        time.sleep(0.005)
    ids = [f"img{i}" for i in range(200)]
    order = ids if name == "a" else ids[::-1]
    for start in range(0, 200, 3):  # many small puts, flushed every 5 rows, both writers on the same ids
        chunk = order[start:start + 3]
        found = ns.lookup(chunk)[1]
        new = [i for i, f in zip(chunk, found) if not f]
        if new:
            ns.put(new, rows(new))
    ns.flush()
    print("ok", ns.stats.written)
"""


def test_two_concurrent_writers_of_the_same_entries(tmp_path):
    FeatureCache(tmp_path)
    procs = [run_python(WRITER, str(tmp_path), name, str(Path(__file__).parent), wait=False) for name in "ab"]
    time.sleep(0.5)
    (tmp_path / "go").touch()
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    written = [int(out.split()[-1]) for out, _ in outs]
    assert sum(written) == 200  # every entry committed exactly once
    ns = FeatureCache(tmp_path).namespace(parts())
    ids = [f"img{i}" for i in range(200)]
    got, found = ns.lookup(ids)
    assert found.all()
    np.testing.assert_array_equal(got, rows(ids))
    assert verify(tmp_path) == {"checked": 200, "dropped": 0}
    assert not list(tmp_path.rglob("*.tmp"))
    report = prune(tmp_path, grace_seconds=0)  # nothing may be orphaned or unreferenced
    assert report.files == [] and report.namespaces == []


KILLED = """
    import os, sys, time, numpy as np
    from pathlib import Path
    from fewshot_bench.backbones import feature_cache as fc
    root, stage = sys.argv[1], sys.argv[2]
    def hang(*args, **kwargs):
        Path(root, "reached").touch()
        time.sleep(600)
    if stage == "rename":  # the shard is written to its temporary file, not renamed yet
        fc.os.replace = hang
    else:  # the shard is in place, its index transaction not committed
        original = fc.FeatureCache.transaction
        def transaction(self, statements):
            statements = list(statements)
            if any("INSERT INTO shards" in sql for sql, _ in statements):
                hang()
            return original(self, statements)
        fc.FeatureCache.transaction = transaction
    parts = fc.namespace_parts("net@abc", (32, 32, 3), (-1.0, 1.0), ("embedding",), "avg", "float32")
    ns = fc.FeatureCache(root).namespace(parts)
    ns.put(["k1", "k2"], np.ones((2, 6), np.float32))
    ns.flush()
"""


@pytest.mark.parametrize("stage", ["rename", "commit"])
def test_killed_write_is_never_read_and_is_pruned(tmp_path, stage):
    proc = run_python(KILLED, str(tmp_path), stage, wait=False)
    deadline = time.time() + 60
    while not (tmp_path / "reached").exists():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    ns = FeatureCache(tmp_path).namespace(parts())
    leftovers = list((tmp_path / ns.key).iterdir())
    assert len(leftovers) == 1 and (leftovers[0].name.endswith(".tmp") == (stage == "rename"))
    assert not ns.lookup(["k1", "k2"])[1].any()
    assert describe(tmp_path)[0].entries == 0
    assert prune(tmp_path).files == []  # too young: could be a writer about to commit
    assert prune(tmp_path, grace_seconds=0).files == leftovers
    assert not leftovers[0].exists()
    ns.put(["k1", "k2"], rows(["k1", "k2"]))
    ns.flush()
    got, found = FeatureCache(tmp_path).namespace(parts()).lookup(["k1", "k2"])
    assert found.all()
    np.testing.assert_array_equal(got, rows(["k1", "k2"]))


# ---- damage ----

def _one_shard(tmp_path, ids):
    ns = FeatureCache(tmp_path).namespace(parts())
    ns.put(ids, rows(ids))
    ns.flush()
    (shard,) = (tmp_path / ns.key).glob("*.npy")
    return shard


def test_corrupt_row_is_detected_dropped_and_replaced(tmp_path):
    ids = ["c0", "c1", "c2", "c3"]
    shard = _one_shard(tmp_path, ids)
    data = bytearray(shard.read_bytes())
    header = len(data) - len(ids) * DIM * 4
    data[header + DIM * 4 + 5] ^= 0xFF  # one byte of row 1
    shard.write_bytes(bytes(data))
    ns = FeatureCache(tmp_path).namespace(parts())
    got, found = ns.lookup(ids)
    assert found.tolist() == [True, False, True, True]
    assert ns.stats.corrupt == 1
    np.testing.assert_array_equal(got[[0, 2, 3]], rows(ids)[[0, 2, 3]])
    assert describe(tmp_path)[0].entries == 3  # the bad entry left the index
    ns.put(["c1"], rows(["c1"]))
    ns.flush()
    got, found = FeatureCache(tmp_path).namespace(parts()).lookup(ids)
    assert found.all()
    np.testing.assert_array_equal(got, rows(ids))


def test_truncated_or_missing_shard_reads_as_misses(tmp_path):
    ids = ["t0", "t1", "t2"]
    shard = _one_shard(tmp_path, ids)
    shard.write_bytes(shard.read_bytes()[:100])
    ns = FeatureCache(tmp_path).namespace(parts())
    assert not ns.lookup(ids)[1].any() and ns.stats.corrupt == 3
    shard = _one_shard(tmp_path / "other", ids)
    shard.unlink()
    assert not FeatureCache(tmp_path / "other").namespace(parts()).lookup(ids)[1].any()


def test_verify_drops_corrupt_entries(tmp_path):
    ids = [f"v{i}" for i in range(5)]
    shard = _one_shard(tmp_path, ids)
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0x01  # last byte of the last row
    shard.write_bytes(bytes(data))
    assert verify(tmp_path) == {"checked": 5, "dropped": 1}
    assert verify(tmp_path) == {"checked": 4, "dropped": 0}


def test_damaged_index_names_the_file_and_the_fix(tmp_path):
    (tmp_path / "index.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(DataError, match=rf"{tmp_path}.*index.sqlite.*delete {tmp_path}"):
        FeatureCache(tmp_path)


# ---- pruning ----

def test_prune_by_filters(tmp_path):
    cache = FeatureCache(tmp_path)
    spaces = {"old_code": namespace_parts("net@abc", (32, 32, 3), (0.0, 1.0), ("embedding",), "avg", "float32",
                                          code_version=fc.CODE_VERSION - 1),
              "net": parts(), "other": parts(backbone_id="other@123")}
    keys = {}
    for label, p in spaces.items():
        ns = cache.namespace(p)
        ns.put(["a"], rows(["a"]))
        ns.flush()
        keys[label] = ns.key
    assert {i.key: i.stale for i in describe(tmp_path)} == {keys["old_code"]: True, keys["net"]: False,
                                                            keys["other"]: False}
    assert prune(tmp_path).namespaces == []  # no filter, nothing removed
    assert prune(tmp_path, stale=True, dry_run=True).namespaces == [keys["old_code"]]
    assert (tmp_path / keys["old_code"]).is_dir()
    report = prune(tmp_path, stale=True)
    assert report.namespaces == [keys["old_code"]] and report.bytes > 0
    assert not (tmp_path / keys["old_code"]).exists()
    assert prune(tmp_path, backbone="other").namespaces == [keys["other"]]
    assert prune(tmp_path, unused_days=1).namespaces == []
    cache.execute("UPDATE namespaces SET last_used = ?", (time.time() - 3 * 86400,))
    assert prune(tmp_path, unused_days=2).namespaces == [keys["net"]]
    assert describe(tmp_path) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["index.sqlite"]
