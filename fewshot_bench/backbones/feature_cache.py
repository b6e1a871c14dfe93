"""Persistent feature cache: pooled features on disk, one row per (namespace, image id).

Layout under the cache root (default ``$FEWSHOT_BENCH_HOME/features``)::

    index.sqlite                 namespaces, shards and entries (SQLite, stdlib)
    <namespace>/<shard>.npy      float32 [rows, dim] feature shards, read memory-mapped

A **namespace** is everything that determines a feature vector except the
image: backbone id (name + weights hash), image shape (the preprocessing size),
value range, layer selection, pooling, numeric precision and
:data:`CODE_VERSION`. Its key is a hash of those parts (:func:`namespace_key`),
so changing any of them can never read an old entry. Within a namespace an
**entry** is one image id (ids are globally unique strings such as
``"<dataset>/<split>/<index>"`` or ``"<source>/<class>/<record>"``, so they
carry dataset or source and split) pointing at a row of a shard, with the
CRC-32 of that row.

Safety:

- A shard is written to a temporary file, fsynced, renamed into place, and
  only then committed to the index in one SQLite transaction. A killed writer
  leaves an unreferenced file (removed by ``prune``); readers only follow
  committed entries, so a partial entry is never read back.
- Two processes writing the same entry: entries are ``INSERT OR IGNORE``, the
  first commit wins, the loser's shard is deleted if nothing refers to it.
  SQLite's file locking serialises the commits.
- Every row read back is checked against its CRC-32; a mismatch (or a shard
  that is missing or unreadable) drops the entry, and the caller recomputes it.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
import sqlite3
import threading
import time
import uuid
import weakref
import zlib
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from fewshot_bench.errors import DataError
from fewshot_bench.paths import home

CODE_VERSION = 1
"""Bump when anything in feature computation changes (pooling, preprocessing, models)."""

ORPHAN_GRACE_SECONDS = 3600.0
"""Unreferenced shard files younger than this may belong to a writer about to commit."""

_SQL_CHUNK = 500  # ids per SELECT ... IN (...)
_FLUSH_BYTES = 64 << 20  # buffered rows are written once they hold this much
_OPEN_SHARDS = 64  # memory maps kept open per namespace (each holds a file descriptor)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS namespaces (
    key TEXT PRIMARY KEY, parts TEXT NOT NULL, dim INTEGER,
    created REAL NOT NULL, last_used REAL NOT NULL);
CREATE TABLE IF NOT EXISTS shards (
    name TEXT PRIMARY KEY, namespace TEXT NOT NULL, rows INTEGER NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    namespace TEXT NOT NULL, image_id TEXT NOT NULL, shard TEXT NOT NULL, row INTEGER NOT NULL,
    crc INTEGER NOT NULL, PRIMARY KEY (namespace, image_id));
CREATE INDEX IF NOT EXISTS entries_by_shard ON entries (shard);
"""


def default_cache_dir() -> Path:
    """``$FEWSHOT_BENCH_HOME/features`` (``FEWSHOT_BENCH_HOME`` defaults to ``~/.cache/fewshot_bench``)."""
    return home() / "features"


def namespace_parts(backbone_id: str, image_shape: Sequence[int], value_range: Sequence[float],
                    layers: Sequence[str], pooling: str, precision: str,
                    code_version: Optional[int] = None) -> dict[str, Any]:
    """The parts of a cache key besides the image id, as a JSON-able dict (default code version: current)."""
    code_version = CODE_VERSION if code_version is None else code_version
    return {"backbone": backbone_id, "image_shape": [int(s) for s in image_shape],
            "value_range": [float(v) for v in value_range], "layers": list(layers), "pooling": pooling,
            "precision": precision, "code_version": int(code_version)}


def namespace_key(parts: dict[str, Any]) -> str:
    """Hash of the canonical JSON of ``parts``: equal parts, equal key; any change, new key."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def row_crc(row: np.ndarray) -> int:
    """CRC-32 of a float32 row's bytes (little-endian, C order)."""
    return zlib.crc32(np.ascontiguousarray(row, dtype="<f4").tobytes())


def _write_atomic(path: Path, array: np.ndarray) -> None:
    """Write ``array`` as ``.npy`` at ``path``: temporary file, fsync, rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    try:  # make the rename durable too
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


@dataclasses.dataclass
class CacheStats:
    """Counters of one namespace handle (for tests, benchmarks and logs)."""

    hits: int = 0
    misses: int = 0
    corrupt: int = 0
    written: int = 0


class FeatureCache:
    """The on-disk cache rooted at ``root`` (created on first use)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._local = threading.local()
        self._connect()  # fail early, naming the directory, if it is unusable

    @property
    def index_path(self) -> Path:
        return self.root / "index.sqlite"

    def _connect(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            return conn
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.index_path, timeout=120.0, isolation_level=None)
            conn.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as e:
            raise DataError(f"feature cache {self.root}: cannot open {self.index_path} ({e}); "
                            f"choose another cache directory, or delete {self.root} if it is damaged") from e
        self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    def execute(self, sql: str, args: Iterable[Any] = ()) -> list[tuple]:
        """Run one statement in its own transaction; returns the rows."""
        try:
            return self._connect().execute(sql, tuple(args)).fetchall()
        except sqlite3.DatabaseError as e:
            raise DataError(f"feature cache index {self.index_path}: {e}; delete {self.root} "
                            f"to start an empty cache") from e

    def transaction(self, statements: Iterable[tuple[str, Sequence[Any]]]) -> list[int]:
        """Run statements atomically (``BEGIN IMMEDIATE`` takes the write lock first).

        Returns the number of rows each statement changed.
        """
        conn = self._connect()
        changed = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for sql, args in statements:
                    changed.append(conn.execute(sql, tuple(args)).rowcount)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.DatabaseError as e:
            raise DataError(f"feature cache index {self.index_path}: {e}; delete {self.root} "
                            f"to start an empty cache") from e
        return changed

    def namespace(self, parts: dict[str, Any], flush_rows: int = 4096) -> "Namespace":
        """A handle on the entries that share ``parts`` (see :func:`namespace_parts`)."""
        key = namespace_key(parts)
        now = time.time()
        self.transaction([
            ("INSERT OR IGNORE INTO namespaces (key, parts, dim, created, last_used) VALUES (?, ?, NULL, ?, ?)",
             (key, json.dumps(parts, sort_keys=True), now, now)),
            ("UPDATE namespaces SET last_used = ? WHERE key = ?", (now, key))])
        return Namespace(self, key, parts, flush_rows)


class Namespace:
    """Entries of one namespace: :meth:`lookup` rows by image id, :meth:`put` new rows.

    New rows are buffered and written as one shard every ``flush_rows`` rows
    (or 64 MiB), on :meth:`flush`, and when the handle is garbage-collected or
    the process exits normally.
    """

    def __init__(self, cache: FeatureCache, key: str, parts: dict[str, Any], flush_rows: int):
        self.cache, self.key, self.parts, self.flush_rows = cache, key, parts, max(1, flush_rows)
        self.directory = cache.root / key
        self.stats = CacheStats()
        self._lock = threading.RLock()
        self._pending: dict[str, np.ndarray] = {}
        self._where: dict[str, tuple[str, int, int]] = {}  # image id -> (shard, row, crc)
        self._maps: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict()
        weakref.finalize(self, Namespace._flush_rows, cache, key, parts, self.directory, self._pending)

    # ---- reading ----

    def _locate(self, ids: Sequence[str]) -> None:
        """Fill ``_where`` for the ids of ``ids`` committed by any process."""
        for start in range(0, len(ids), _SQL_CHUNK):
            chunk = list(ids[start:start + _SQL_CHUNK])
            marks = ",".join("?" * len(chunk))
            rows = self.cache.execute(f"SELECT image_id, shard, row, crc FROM entries "
                                      f"WHERE namespace = ? AND image_id IN ({marks})", [self.key, *chunk])
            for image_id, shard, row, crc in rows:
                self._where[image_id] = (shard, row, crc)

    def _shard(self, name: str) -> Optional[np.ndarray]:
        """The shard memory-mapped, or None if it is missing or unreadable."""
        if name in self._maps:
            self._maps.move_to_end(name)
            return self._maps[name]
        try:
            array = np.load(self.directory / f"{name}.npy", mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None
        if array.ndim != 2 or array.dtype != np.float32:
            return None
        self._maps[name] = array
        if len(self._maps) > _OPEN_SHARDS:
            self._maps.popitem(last=False)
        return array

    def _drop(self, bad: list[tuple[str, str, int]]) -> None:
        """Forget entries (image id, shard, row) that failed their check, here and in the index."""
        for image_id, _, _ in bad:
            self._where.pop(image_id, None)
        self.cache.transaction(
            ("DELETE FROM entries WHERE namespace = ? AND image_id = ? AND shard = ? AND row = ?",
             (self.key, image_id, shard, row)) for image_id, shard, row in bad)

    def lookup(self, ids: Sequence[str]) -> tuple[Optional[np.ndarray], np.ndarray]:
        """Cached rows for ``ids``: ``(rows [n, dim] or None if nothing is cached, found mask [n])``.

        Rows of ids not found are undefined. A row failing its CRC-32, or in a
        missing or unreadable shard, counts as not found and is dropped from
        the index (``stats.corrupt``) so that the caller's recomputation
        replaces it.
        """
        with self._lock:
            n = len(ids)
            found = np.zeros(n, dtype=bool)
            unknown = [i for i in dict.fromkeys(ids) if i not in self._where and i not in self._pending]
            if unknown:
                self._locate(unknown)
            by_shard: dict[str, list[int]] = collections.defaultdict(list)
            out: Optional[np.ndarray] = None
            for position, image_id in enumerate(ids):
                row = self._pending.get(image_id)
                if row is not None:
                    out = out if out is not None else np.zeros((n, len(row)), np.float32)
                    out[position], found[position] = row, True
                elif image_id in self._where:
                    by_shard[self._where[image_id][0]].append(position)
            bad: list[tuple[str, str, int]] = []
            for shard, positions in by_shard.items():
                array = self._shard(shard)
                places = [self._where[ids[p]] for p in positions]
                if array is None:
                    bad += [(ids[p], shard, row) for p, (_, row, _) in zip(positions, places)]
                    continue
                rows_idx = np.array([row for _, row, _ in places])
                if rows_idx.max() >= len(array):
                    bad += [(ids[p], shard, row) for p, (_, row, _) in zip(positions, places)]
                    continue
                values = np.asarray(array[rows_idx])
                out = out if out is not None else np.zeros((n, array.shape[1]), np.float32)
                for p, value, (_, row, crc) in zip(positions, values, places):
                    if row_crc(value) == crc:
                        out[p], found[p] = value, True
                    else:
                        bad.append((ids[p], shard, row))
            if bad:
                self.stats.corrupt += len(bad)
                self._drop(bad)
            self.stats.hits += int(found.sum())
            self.stats.misses += int(n - found.sum())
            return out, found

    # ---- writing ----

    def put(self, ids: Sequence[str], rows: np.ndarray) -> None:
        """Add rows for ids (buffered; written as a shard every ``flush_rows`` rows)."""
        rows = np.asarray(rows, dtype=np.float32)
        if rows.ndim != 2 or len(rows) != len(ids):
            raise ValueError(f"put: {len(ids)} ids and rows of shape {rows.shape}")
        with self._lock:
            for image_id, row in zip(ids, rows):
                if image_id not in self._where:
                    self._pending[image_id] = np.array(row)
            limit = min(self.flush_rows, max(1, _FLUSH_BYTES // max(1, 4 * rows.shape[1])))
            if len(self._pending) >= limit:
                self.flush()

    def flush(self) -> None:
        """Write the buffered rows as one shard and commit them to the index."""
        with self._lock:
            self.stats.written += Namespace._flush_rows(self.cache, self.key, self.parts, self.directory,
                                                        self._pending)

    @staticmethod
    def _flush_rows(cache: FeatureCache, key: str, parts: dict[str, Any], directory: Path,
                    pending: dict[str, np.ndarray]) -> int:
        """Write ``pending`` as a shard, commit, clear it; returns the number of new entries."""
        if not pending:
            return 0
        ids = list(pending)
        array = np.stack([pending[i] for i in ids]).astype(np.float32)
        name = f"{time.strftime('%Y%m%d%H%M%S')}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        directory.mkdir(parents=True, exist_ok=True)
        _write_atomic(directory / f"{name}.npy", array)
        now = time.time()
        statements: list[tuple[str, Sequence[Any]]] = [
            ("INSERT INTO shards (name, namespace, rows, created) VALUES (?, ?, ?, ?)", (name, key, len(ids), now)),
            # the namespace row again, in case a prune removed it while these rows were buffered
            ("INSERT OR IGNORE INTO namespaces (key, parts, dim, created, last_used) VALUES (?, ?, ?, ?, ?)",
             (key, json.dumps(parts, sort_keys=True), array.shape[1], now, now)),
            ("UPDATE namespaces SET dim = ?, last_used = ? WHERE key = ?", (array.shape[1], now, key))]
        statements += [("INSERT OR IGNORE INTO entries (namespace, image_id, shard, row, crc) VALUES (?, ?, ?, ?, ?)",
                        (key, image_id, name, row, row_crc(array[row]))) for row, image_id in enumerate(ids)]
        inserted = sum(cache.transaction(statements)[3:])
        pending.clear()
        if inserted == 0:  # another process committed every one of these first
            cache.transaction([("DELETE FROM shards WHERE name = ?", (name,))])
            (directory / f"{name}.npy").unlink(missing_ok=True)
        return inserted


# ---- inspection and pruning (the `fewshot-bench cache` command) ----

@dataclasses.dataclass
class NamespaceInfo:
    key: str
    parts: dict[str, Any]
    dim: Optional[int]
    entries: int
    shards: int
    bytes: int
    created: float
    last_used: float

    @property
    def stale(self) -> bool:
        """Written by another version of the feature code (never read by this one)."""
        return self.parts.get("code_version") != CODE_VERSION


def _dir_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.glob("*") if p.is_file()) if directory.is_dir() else 0


def describe(root: str | Path) -> list[NamespaceInfo]:
    """Every namespace of the cache at ``root``, most recently used first."""
    cache = FeatureCache(root)
    counts = dict((k, (e, s)) for k, e, s in cache.execute(
        "SELECT n.key, (SELECT COUNT(*) FROM entries e WHERE e.namespace = n.key), "
        "(SELECT COUNT(*) FROM shards s WHERE s.namespace = n.key) FROM namespaces n"))
    infos = []
    for key, parts, dim, created, last_used in cache.execute(
            "SELECT key, parts, dim, created, last_used FROM namespaces ORDER BY last_used DESC"):
        entries, shards = counts.get(key, (0, 0))
        infos.append(NamespaceInfo(key, json.loads(parts), dim, entries, shards,
                                   _dir_bytes(cache.root / key), created, last_used))
    return infos


@dataclasses.dataclass
class PruneReport:
    namespaces: list[str] = dataclasses.field(default_factory=list)
    files: list[Path] = dataclasses.field(default_factory=list)
    bytes: int = 0


def _matches_backbone(parts: dict[str, Any], backbone: Optional[str]) -> bool:
    if backbone is None:
        return True
    name = parts.get("backbone", "")
    return name == backbone or name.split("@")[0] == backbone


def prune(root: str | Path, *, everything: bool = False, stale: bool = False, backbone: Optional[str] = None,
          unused_days: Optional[float] = None, dry_run: bool = False,
          grace_seconds: float = ORPHAN_GRACE_SECONDS) -> PruneReport:
    """Remove namespaces and leftover files; returns what was (or, with ``dry_run``, would be) removed.

    Namespaces go if ``everything``, or if they match every filter given:
    ``stale`` (another :data:`CODE_VERSION`), ``backbone`` (a name or a full
    ``name@weights`` id), ``unused_days`` (not used for that long). Without
    filters no namespace is removed. Always removed: shard files no entry
    refers to and temporary files of killed writers, once older than
    ``grace_seconds``.
    """
    cache = FeatureCache(root)
    report = PruneReport()
    filtered = stale or backbone is not None or unused_days is not None
    now = time.time()
    for info in describe(root):
        if everything or (filtered and (not stale or info.stale) and _matches_backbone(info.parts, backbone)
                          and (unused_days is None or now - info.last_used > unused_days * 86400)):
            report.namespaces.append(info.key)
            report.bytes += info.bytes
    if not dry_run:
        for key in report.namespaces:
            cache.transaction([("DELETE FROM entries WHERE namespace = ?", (key,)),
                               ("DELETE FROM shards WHERE namespace = ?", (key,)),
                               ("DELETE FROM namespaces WHERE key = ?", (key,))])
            directory = cache.root / key
            if directory.is_dir():
                for path in sorted(directory.iterdir()):
                    path.unlink(missing_ok=True)
                directory.rmdir()
    # Shards nobody refers to (all their rows replaced), then files the index does not know.
    if not dry_run:
        cache.execute("DELETE FROM shards WHERE name NOT IN (SELECT DISTINCT shard FROM entries) AND created < ?",
                      (now - grace_seconds,))
    known = {name for (name,) in cache.execute("SELECT name FROM shards")}
    removed = set(report.namespaces)
    for directory in sorted(p for p in cache.root.iterdir() if p.is_dir() and p.name not in removed):
        for path in sorted(directory.iterdir()):
            is_shard = path.suffix == ".npy" and not path.name.startswith(".")
            if (is_shard and path.stem in known) or now - path.stat().st_mtime < grace_seconds:
                continue
            report.files.append(path)
            report.bytes += path.stat().st_size
            if not dry_run:
                path.unlink(missing_ok=True)
    return report


def verify(root: str | Path) -> dict[str, int]:
    """Check every entry's CRC-32; drop bad ones (recomputed on next use). Returns counts."""
    cache = FeatureCache(root)
    checked = dropped = 0
    for key, parts in cache.execute("SELECT key, parts FROM namespaces"):
        ns = Namespace(cache, key, json.loads(parts), flush_rows=1)
        ids = [image_id for (image_id,) in cache.execute("SELECT image_id FROM entries WHERE namespace = ?", (key,))]
        for start in range(0, len(ids), 4096):
            ns.lookup(ids[start:start + 4096])
        checked += len(ids)
        dropped += ns.stats.corrupt
    return {"checked": checked, "dropped": dropped}
