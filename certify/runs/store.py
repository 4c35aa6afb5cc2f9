"""The run store: an SQLite file holding a run's configuration and one row per finished input.

Why SQLite: embedded, no server, and each commit is durable (WAL journal, synchronous=FULL), so a
crash or SIGKILL loses at most the inputs in flight, never a committed row, and never leaves a
half-written one. `idx` is the primary key: an input can never be counted twice.

One writer: only the process driving a run writes here. A scale-out backend with many workers
sends finished rows back to that driver, which calls `add` (workers never open the file), so the
store stays a single-writer database whatever runs the inputs.
"""

from __future__ import annotations

import glob
import json
import os
import sqlite3
from pathlib import Path

__all__ = ["RunStore", "RunStoreError", "STORE_NAME", "LOCK_NAME"]

STORE_NAME = "run.sqlite"
LOCK_NAME = ".certify.lock"
SCHEMA_VERSION = 1


class RunStoreError(ValueError):
    """The run folder cannot be used as asked (exists without --resume, holds another run, ...)."""


class RunStore:
    """rows: {index: row dict}; config: the run's parameters, fixed when the run is created."""

    def __init__(self, connection: sqlite3.Connection, path: Path, lock=None):
        self._db = connection
        self.path = path
        self._lock = lock  # the open lock file of a store opened for writing (released by close)

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, folder: Path, config: dict, resume: bool) -> RunStore:
        """The store of the run in `folder`: created with `config`, or, with resume=True, the
        existing one, which must have been created with the same config. The caller holds the
        folder's lock (see `lock`) until close(): a second process on the same folder is refused."""
        folder = Path(folder)
        path = folder / STORE_NAME
        leftover = folder / (STORE_NAME + ".creating")  # from a crash while a store was being created

        def ours(p: Path) -> bool:  # the lock, and the temporary store with its -wal, -shm or -journal
            return p.name == LOCK_NAME or p.name.startswith(leftover.name)

        if not path.exists() and folder.exists() and not all(ours(p) for p in folder.iterdir()):
            raise RunStoreError(f"{folder} exists and is not a run folder (it has no {STORE_NAME}); "
                                "choose an empty or new --out folder")
        folder.mkdir(parents=True, exist_ok=True)
        lock = _lock(folder)
        try:
            if path.exists():
                if not resume:
                    raise RunStoreError(f"{folder} already holds a run; pass --resume to continue it, "
                                        "or choose another --out folder")
                store = cls(_connect(path), path, lock)
                try:
                    store._check_config(config)
                except BaseException:
                    store._db.close()
                    raise
                return store
            # Built under a temporary name and renamed: a crash here leaves no store that looks valid.
            # A killed creation leaves the temporary store and its -wal / -shm (we hold the lock: no
            # one else is creating it); a stale -wal beside a new database would be read as its log.
            tmp = leftover
            for stale in folder.glob(glob.escape(leftover.name) + "*"):
                stale.unlink(missing_ok=True)
            db = _connect(tmp)
            with db:
                db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
                db.execute("CREATE TABLE results (idx INTEGER PRIMARY KEY, row TEXT NOT NULL)")
                db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
                db.execute("INSERT INTO meta VALUES ('config', ?)", (_dump(config),))
            db.close()
            tmp.replace(path)
            return cls(_connect(path), path, lock)
        except BaseException:
            lock.close()
            raise

    @classmethod
    def load(cls, folder: Path) -> RunStore:
        """An existing run, read-only use (report, export)."""
        path = Path(folder) / STORE_NAME
        if not path.is_file():
            raise RunStoreError(f"{folder} is not a run folder: it has no {STORE_NAME}")
        return cls(_connect(path), path)

    # Settings that do not change any row. None: even the batch size does (a float32 forward pass
    # may round a sample's logits differently in a batch of another size, flipping near ties), so
    # a run resumes with exactly the settings it was created with.
    FREE_ON_RESUME: tuple[str, ...] = ()
    # Settings added since a run store could have been created, with the value that older runs
    # meant: such a run resumes with the new code.
    DEFAULTS = {"method.inference": "exact"}

    def _check_config(self, config: dict) -> None:
        stored, asked = _flatten(self.config), _flatten(json.loads(_dump(config)))  # config: DEFAULTS filled in
        if config.get("method", {}).get("family") == "bounds":  # asked in the older form: the same defaults
            asked = {**self.DEFAULTS, **asked}
        changed = sorted(k for k in stored.keys() | asked.keys()
                         if stored.get(k) != asked.get(k) and k not in self.FREE_ON_RESUME)
        if changed:
            shown = ", ".join(f"{k}: {stored.get(k)!r} in the run, {asked.get(k)!r} now" for k in changed[:4])
            raise RunStoreError(f"{self.path.parent} holds a run with different settings ({shown}); resume it "
                                "with the same command, or choose another --out folder")

    # ------------------------------------------------------------------ content
    @property
    def config(self) -> dict:
        """The run's settings, with the DEFAULTS of settings added since the store was created
        filled in (bounds runs): what the run means, and what its certificate must state."""
        text = self._meta("config")
        try:
            config = json.loads(text)
        except (TypeError, ValueError) as exc:
            raise RunStoreError(f"{self.path}: the run's settings are not valid JSON ({exc})") from exc
        if not isinstance(config, dict) or not {"model", "data", "method"} <= config.keys():
            raise RunStoreError(f"{self.path}: the run's settings lack model, data or method")
        if isinstance(config["method"], dict) and config["method"].get("family") == "bounds":
            for key, value in self.DEFAULTS.items():
                part, name = key.split(".")
                if isinstance(config.get(part), dict):
                    config[part].setdefault(name, value)
        return config

    def _meta(self, key: str) -> str:
        try:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        except sqlite3.DatabaseError as exc:
            raise RunStoreError(f"{self.path} is not a certify run store ({exc})") from exc
        if row is None:
            raise RunStoreError(f"{self.path} is not a certify run store (no '{key}')")
        return row[0]

    def done(self) -> set[int]:
        return {idx for (idx,) in self._db.execute("SELECT idx FROM results")}

    def rows(self) -> list[dict]:
        """Every finished row, in index order (RunStoreError for a row that is not a JSON object
        holding its own index: the store was edited or damaged)."""
        rows = []
        for idx, text in self._db.execute("SELECT idx, row FROM results ORDER BY idx"):
            try:
                row = json.loads(text)
            except (TypeError, ValueError) as exc:  # json.JSONDecodeError; TypeError: a non-text column
                raise RunStoreError(f"{self.path}: the row of input {idx} is not valid JSON ({exc}); "
                                    "the run store was edited or damaged") from exc
            if not isinstance(row, dict) or row.get("index") != idx:
                raise RunStoreError(f"{self.path}: the row stored for input {idx} is not that input's row; "
                                    "the run store was edited or damaged")
            rows.append(row)
        return rows

    def add(self, rows: list[dict]) -> None:
        """Commits finished rows (each with an 'index'); an index already stored is an error."""
        try:
            with self._db:
                self._db.executemany("INSERT INTO results VALUES (?, ?)", [(int(r["index"]), _dump(r)) for r in rows])
        except sqlite3.IntegrityError as exc:
            raise RunStoreError(f"an input was certified twice ({exc}); the run store refuses duplicates") from exc

    def close(self) -> None:
        self._db.close()
        if self._lock is not None:
            self._lock.close()  # closing the file releases the flock
            self._lock = None


def _lock(folder: Path):
    """An exclusive lock on the run folder, held while the returned file stays open: two processes
    writing one run would certify inputs twice. The file holds the holder's process id, for the
    message the second process prints. (fcntl locks are POSIX; elsewhere runs are not locked.)"""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return None
    handle = open(folder / LOCK_NAME, "a+")  # noqa: SIM115 - held open until the store closes
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise RunStoreError(f"another certify process (pid {holder}) is running in {folder}; wait for it to finish, "
                            "or stop it and run again with --resume") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def _connect(path: Path) -> sqlite3.Connection:
    try:
        db = sqlite3.connect(path, isolation_level="DEFERRED")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")  # a committed row survives power loss, not only a crash
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        raise RunStoreError(f"{path} is not a certify run store ({exc})") from exc
    return db


def _dump(value) -> str:
    return json.dumps(value, sort_keys=True, allow_nan=False)


def _flatten(value: dict, prefix: str = "") -> dict:
    """{"method": {"alpha": 0.1}} -> {"method.alpha": 0.1}, to name what differs."""
    flat = {}
    for key, item in value.items():
        if isinstance(item, dict):
            flat.update(_flatten(item, f"{prefix}{key}."))
        else:
            flat[prefix + key] = item
    return flat
