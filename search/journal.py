"""Append-only trial journal of a search run directory, its metadata and its lock.

A search run directory holds:

- ``search.json``: :class:`SearchMeta` (strategy, space, seed, options, dataset, extra), written
  once; a resume must present the same metadata or is refused.
- ``journal.jsonl``: one JSON object per line. Each trial writes a ``RUNNING`` record when it
  starts and one final record (``COMPLETE``, ``FAILED`` or ``PRUNED``) when it ends. Keys:
  ``trial`` (int, from 1), ``state``, ``params``, ``value`` (float or null), ``metrics``,
  ``error``, ``traceback``, ``timings`` (seconds), ``started_at``, ``finished_at`` (Unix times),
  ``worker``, ``written_at``.
- ``search.lock``: held (``filelock``) while a search runs in the directory.

Each record is appended with one ``write`` on an ``O_APPEND`` descriptor followed by ``fsync``,
so a ``kill -9`` leaves at most a torn last line. Readers skip unparsable lines with a warning;
opening the journal for writing cuts a torn tail off first so the next record starts on a
fresh line.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from common.errors import TlbenchError

from .space import Space, to_python
from .trial import Trial, TrialState

log = logging.getLogger(__name__)

JOURNAL_NAME = "journal.jsonl"
META_NAME = "search.json"
LOCK_NAME = "search.lock"
META_VERSION = 1


#: Searches whose points are not drawn from the space (the fixed scheme, the BiT rule), so their
#: records are not checked against it.
OWN_POINT_KINDS = ("fixed", "bit")


class JournalError(TlbenchError):
    """A journal or its run directory cannot be used (locked, mismatched, corrupt)."""


class SearchExistsError(JournalError):
    """:meth:`Journal.create` was given a run directory that already holds a search."""


@dataclass(frozen=True)
class SearchMeta:
    """What identifies a search; a resume must match it exactly (``created_at`` aside).

    ``extra`` holds anything else that must not change between runs of one search (for example
    the base training config); ``options`` are the strategy's keyword options.
    """

    strategy: str
    space: dict[str, Any]
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    dataset: Optional[str] = None
    extra: dict[str, Any] = field(default_factory=dict)
    created_at: Optional[float] = None
    version: int = META_VERSION

    def __post_init__(self) -> None:
        if isinstance(self.space, Space):
            object.__setattr__(self, "space", self.space.to_dict())
        object.__setattr__(self, "options", to_python(dict(self.options)))
        object.__setattr__(self, "extra", to_python(dict(self.extra)))

    def identity(self) -> dict[str, Any]:
        """The fields compared on resume (JSON round-tripped so tuples and lists compare equal)."""
        data = self.to_dict()
        data.pop("created_at", None)
        return json.loads(json.dumps(data, sort_keys=True))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (the content of ``search.json``)."""
        return to_python(
            {
                "version": self.version,
                "strategy": self.strategy,
                "seed": self.seed,
                "options": self.options,
                "dataset": self.dataset,
                "space": self.space,
                "extra": self.extra,
                "created_at": self.created_at,
            }
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SearchMeta":
        """Inverse of :meth:`to_dict`."""
        known = {"version", "strategy", "seed", "options", "dataset", "space", "extra", "created_at"}
        return cls(**{k: v for k, v in data.items() if k in known})

    def build_space(self) -> Space:
        """The search space."""
        return Space.from_dict(self.space, where=META_NAME)

    def record_space(self) -> Optional[Space]:
        """The space a journal record's params must be a point of; None for the fixed scheme and
        the BiT rule, whose points are their own."""
        return None if self.strategy in OWN_POINT_KINDS else self.build_space()


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def record_problem(record: Any, space: Optional[Space] = None) -> Optional[str]:
    """Why ``record`` is not a valid trial record (of ``space``, when given), or None."""
    if not isinstance(record, dict):
        return f"a record is a JSON object, got {type(record).__name__}"
    for key in ("trial", "state", "params"):
        if key not in record:
            return f"no {key!r} field"
    trial = record["trial"]
    if not isinstance(trial, int) or isinstance(trial, bool) or trial < 1:
        return f"'trial' must be an integer >= 1, got {trial!r}"
    try:
        state = TrialState(record["state"])
    except ValueError:
        return f"'state' must be one of {[s.value for s in TrialState]}, got {record['state']!r}"
    if not isinstance(record["params"], dict):
        return f"'params' must be an object, got {record['params']!r}"
    value = record.get("value")
    if value is not None and not (_is_number(value) and math.isfinite(value)):
        return f"'value' must be a finite number or null, got {value!r}"
    if state is TrialState.COMPLETE and value is None:
        return "a COMPLETE record needs a 'value'"
    for key in ("metrics", "timings"):
        if record.get(key) is not None and not isinstance(record[key], dict):
            return f"{key!r} must be an object, got {record[key]!r}"
    for key in ("started_at", "finished_at"):
        if record.get(key) is not None and not _is_number(record[key]):
            return f"{key!r} must be a number, got {record[key]!r}"
    if record.get("error") is not None and not isinstance(record["error"], str):
        return f"'error' must be a string, got {record['error']!r}"
    worker = record.get("worker")
    if worker is not None and (not isinstance(worker, int) or isinstance(worker, bool)):
        return f"'worker' must be an integer, got {worker!r}"
    for key, low in (("rung", 0), ("epochs", 1)):  # multi-fidelity rung records
        if key in record and (not isinstance(record[key], int) or isinstance(record[key], bool) or record[key] < low):
            return f"{key!r} must be an integer >= {low}, got {record[key]!r}"
    if space is not None:
        try:
            space.validate(record["params"])
        except (TlbenchError, TypeError, ValueError) as exc:
            return f"params outside the search space: {exc}"
    return None


def read_records(path: str | Path, space: Optional[Space] = None, *, warn: bool = True) -> list[dict[str, Any]]:
    """Every valid record of a journal file, in file order.

    A line that is not JSON, or not a valid trial record (see :func:`record_problem`; with
    ``space``, params must be a point of it), is skipped with a warning naming the file, the
    line and what is wrong.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise JournalError(f"journal {path} does not exist") from None
    records = []
    lines = data.split(b"\n")
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            torn = lineno == len(lines)  # no newline after it: the write was cut short
            if warn:
                log.warning("%s line %d: %s record skipped (%s)", path, lineno, "torn last" if torn else "unreadable", exc)
            continue
        problem = record_problem(record, space)
        if problem is not None:
            if warn:
                log.warning("%s line %d: invalid record skipped (%s)", path, lineno, problem)
            continue
        records.append(record)
    return records


def trials_from_records(records: list[dict[str, Any]]) -> list[Trial]:
    """The latest state of each trial, ordered by trial id."""
    latest: dict[int, dict[str, Any]] = {}
    for record in records:
        tid = int(record["trial"])
        previous = latest.get(tid)
        # A final record is never overridden by a later RUNNING one of a re-run that did not finish.
        if previous is not None and TrialState(previous["state"]).is_finished and record["state"] == "RUNNING":
            continue
        latest[tid] = record
    return [Trial.from_record(latest[k]) for k in sorted(latest)]


def finished_in_order(records: list[dict[str, Any]]) -> list[Trial]:
    """Finished trials in the order their final records were written (the order they were told)."""
    seen: set[int] = set()
    out = []
    for record in records:
        if record["state"] != "RUNNING" and int(record["trial"]) not in seen:
            seen.add(int(record["trial"]))
            out.append(Trial.from_record(record))
    return out


def load_trials(run_dir_or_journal: str | Path) -> list[Trial]:
    """Trials of a run directory (or a journal file), read-only and without taking the lock.

    Records whose params are not points of the space in the ``search.json`` beside the
    journal (when there is one) are skipped with a warning, as are malformed ones.
    """
    path = Path(run_dir_or_journal)
    if path.is_dir():
        path = path / JOURNAL_NAME
    space = None
    if (path.parent / META_NAME).is_file():
        space = load_meta(path.parent).record_space()
    return trials_from_records(read_records(path, space))


def load_meta(run_dir: str | Path) -> SearchMeta:
    """The ``search.json`` of a run directory."""
    path = Path(run_dir) / META_NAME
    try:
        return SearchMeta.from_dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise JournalError(f"{Path(run_dir)} is not a search run directory: {META_NAME} is missing") from None
    except (ValueError, TypeError) as exc:
        raise JournalError(f"{path} is not valid search metadata: {exc}") from None


class Journal:
    """The journal of one search run directory, opened for writing and holding its lock.

    Use :meth:`create` for a new search and :meth:`resume` to continue one; close it (or use it
    as a context manager) to release the lock.
    """

    def __init__(self, run_dir: Path, meta: SearchMeta, lock: Any) -> None:
        self.run_dir = run_dir
        self.meta = meta
        self.path = run_dir / JOURNAL_NAME
        self._lock = lock
        self._write_lock = threading.Lock()
        self._fd: Optional[int] = None
        self._records: list[dict[str, Any]] = []

    # Opening
    @classmethod
    def create(cls, run_dir: str | Path, meta: SearchMeta) -> "Journal":
        """Start a new search in ``run_dir`` (created if needed).

        Raises SearchExistsError when the directory already holds a search (:meth:`resume` continues it).
        """
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = _acquire_lock(run_dir)
        try:
            if (run_dir / META_NAME).exists() or (run_dir / JOURNAL_NAME).exists():
                raise SearchExistsError(
                    f"{run_dir} already holds a search ({META_NAME}/{JOURNAL_NAME}); resume it or choose another "
                    "output directory"
                )
            if meta.created_at is None:
                meta = SearchMeta.from_dict({**meta.to_dict(), "created_at": time.time()})
            _write_atomic(run_dir / META_NAME, json.dumps(meta.to_dict(), indent=2) + "\n")
            journal = cls(run_dir, meta, lock)
            journal._open_for_append()
            return journal
        except BaseException:
            lock.release()
            raise

    @classmethod
    def resume(cls, run_dir: str | Path, meta: Optional[SearchMeta] = None) -> "Journal":
        """Continue the search in ``run_dir``; ``meta``, if given, must match its ``search.json``."""
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise JournalError(f"cannot resume: {run_dir} is not a directory")
        lock = _acquire_lock(run_dir)
        try:
            stored = load_meta(run_dir)
            if meta is not None and meta.identity() != stored.identity():
                a, b = stored.identity(), meta.identity()
                diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
                raise JournalError(
                    f"cannot resume {run_dir}: this search differs from the one recorded in "
                    f"{run_dir / META_NAME} in {diff} (recorded: { {k: a.get(k) for k in diff} }, "
                    f"requested: { {k: b.get(k) for k in diff} })"
                )
            journal = cls(run_dir, stored, lock)
            journal._refuse_lost_journal()
            journal._open_for_append()
            return journal
        except BaseException:
            lock.release()
            raise

    def _refuse_lost_journal(self) -> None:
        """Refuse a resume whose journal is gone (or empty) while results of trials remain beside it.

        Without the journal every trial would silently run again and overwrite those results.
        """
        own = {META_NAME, JOURNAL_NAME, LOCK_NAME, META_NAME + ".tmp"}
        others = sorted(p.name for p in self.run_dir.iterdir() if p.name not in own)
        if not others:
            return
        if not self.path.exists():
            state = "is missing"
        elif not self.path.stat().st_size:
            state = "is empty"
        elif not read_records(self.path, self.meta.record_space(), warn=False):
            state = "holds no valid trial record"
        else:
            return
        raise JournalError(
            f"cannot resume {self.run_dir}: {self.path.name} {state}, but {', '.join(others)} remain from earlier "
            f"trials; resuming would run every trial again. Restore {self.path} from a backup, or start a new "
            f"search in another directory"
        )

    def _open_for_append(self) -> None:
        if self.path.exists():
            data = self.path.read_bytes()
            if data and not data.endswith(b"\n"):
                cut = data.rfind(b"\n") + 1
                log.warning("%s: cutting a torn last line (%d bytes) left by an interrupted write", self.path, len(data) - cut)
                with open(self.path, "r+b") as f:
                    f.truncate(cut)
                    f.flush()
                    os.fsync(f.fileno())
            self._records = read_records(self.path, self.meta.record_space())
        created = not self.path.exists()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if created:
            _fsync_dir(self.run_dir)

    # Writing
    def append(self, record: dict[str, Any]) -> None:
        """Append one record durably (one write, then fsync)."""
        if self._fd is None:
            raise JournalError(f"journal {self.path} is closed")
        record = to_python({**record, "written_at": time.time()})
        line = (json.dumps(record, allow_nan=False, separators=(",", ":")) + "\n").encode()
        with self._write_lock:
            written = os.write(self._fd, line)
            while written < len(line):  # regular files write whole buffers; this is belt and braces
                written += os.write(self._fd, line[written:])
            os.fsync(self._fd)
            self._records.append(record)

    def write_running(self, trial: Trial) -> None:
        """Record that ``trial`` started."""
        self.append(trial.to_record())

    def write_final(self, trial: Trial, traceback: Optional[str] = None) -> None:
        """Record how ``trial`` ended (``traceback`` for a FAILED trial)."""
        if not trial.state.is_finished:
            raise JournalError(f"trial {trial.id}: a final record needs a finished state, got {trial.state.value}")
        self.append({**trial.to_record(), "traceback": traceback})

    # Reading
    @property
    def records(self) -> list[dict[str, Any]]:
        """Every record read at open time plus those appended since."""
        return list(self._records)

    def trials(self) -> list[Trial]:
        """The latest state of each trial, by id."""
        return trials_from_records(self._records)

    def finished_trials(self) -> list[Trial]:
        """Finished trials in the order they finished."""
        return finished_in_order(self._records)

    def interrupted_trials(self) -> list[Trial]:
        """Trials with a RUNNING record and no final record (the process died or was interrupted)."""
        return [t for t in self.trials() if t.state is TrialState.RUNNING]

    def next_trial_id(self) -> int:
        """One more than the largest trial id so far (ids start at 1)."""
        return max((int(r["trial"]) for r in self._records), default=0) + 1

    # Closing
    def close(self) -> None:
        """Close the file and release the run directory's lock."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _acquire_lock(run_dir: Path) -> Any:
    from filelock import FileLock, Timeout

    lock_path = run_dir / LOCK_NAME
    lock = FileLock(str(lock_path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise JournalError(
            f"another search is running in {run_dir} (its lock file {lock_path} is held); "
            "wait for it to finish or choose another output directory"
        ) from None
    return lock


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - some filesystems refuse opening directories
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)
