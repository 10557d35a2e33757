"""One conversion, two transports: Cloud Run executions and Cloud Logging entries
become steadyq's own events.

``steadyq import gcloud`` feeds this module the JSON that ``gcloud … --format=json``
prints; :mod:`steadyq.watch.sources.cloudrun` feeds it the same data read live through
Google's client libraries. Either way the result lands in a SQLite telemetry store, so
every measure, criterion and report works on it unchanged.

* An execution (v1 JSON as gcloud prints it, or a v2 object) becomes
  ``execution.started`` and ``execution.ready`` at its start (startup: creation to
  start) and ``execution.finished`` at its completion, its status read from the
  ``Completed`` condition.
* A log entry that is one of a steadyq worker's own JSON lines becomes exactly the
  event it was; one that matches a ``--rejection-pattern`` becomes
  ``message.rejected``; any other entry of WARNING and above becomes a ``log`` event.
  A plain line without a severity gets one from its text, see :func:`infer_severity`.

Import is idempotent (:class:`Importer`): entries are deduplicated on their
``insertId`` (with their timestamp), executions on their name, and a later state of an
execution replaces the earlier one. Files stream (:func:`iter_json`): none is read
whole into memory.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Protocol

from steadyq.errors import ConfigError
from steadyq.gate import REASONS, REQUEST_ID_INVALID
from steadyq.telemetry import events as ev
from steadyq.telemetry.events import Event, severity_rank
from steadyq.telemetry.logs import LABELS_KEY
from steadyq.telemetry.store import FAILED, SUCCEEDED, TIMED_OUT
from steadyq.telemetry.store_sqlite import (
    EVENT_COLUMNS,
    SqliteStore,
    apply_prepared,
    insert_events_only,
    prepare_events,
    row_to_event,
    write_events,
)

__all__ = [
    "EXECUTION_LABEL",
    "EntryConverter",
    "ImportCounts",
    "Importer",
    "PlatformExecution",
    "execution_from_v1",
    "infer_severity",
    "iter_json",
    "log_entry_for_line",
    "parse_time",
]

EXECUTION_LABEL: Final = "run.googleapis.com/execution_name"
SOURCE: Final = "cloudrun"
_TIMEOUT_TEXT: Final = re.compile(r"timeout was reached|deadline exceeded", re.IGNORECASE)
_WARNING_RANK: Final = severity_rank("WARNING")
_CACHE_KB: Final = 64 * 1024
# what a worker's line may be; message.published is the publisher's, never a worker's
_EVENT_KINDS: Final = frozenset(ev.KINDS) - {ev.MESSAGE_PUBLISHED}

IMPORT_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS gcloud_entries (key TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS gcloud_executions (
    name  TEXT PRIMARY KEY,
    state TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS gcloud_subscriptions (
    name TEXT PRIMARY KEY,
    doc  TEXT NOT NULL
) WITHOUT ROWID;
-- Cloud Run executions whose tasks were steadyq workers: their own events tell more
CREATE TABLE IF NOT EXISTS gcloud_worker_runs (name TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS gcloud_cursors (
    key   TEXT PRIMARY KEY,
    value REAL NOT NULL
) WITHOUT ROWID;
"""


def parse_time(value: Any) -> float | None:
    """Epoch seconds of an RFC 3339 string (nanoseconds are cut to microseconds), of a
    datetime or of epoch seconds; None when there is nothing usable."""
    kind = type(value)
    if kind is float:  # epoch seconds, from the live source
        return value if value > 0 else None
    if kind is str:
        try:
            return datetime.fromisoformat(value).timestamp() if value else None
        except ValueError:
            return None
    if isinstance(value, datetime):
        stamp = value.timestamp()
        return stamp if stamp > 0 else None
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value) if value > 0 else None
    return None


def _number(value: Any) -> float | None:
    """int64 fields are strings in Google's JSON, int32 ones numbers: accept both."""
    kind = type(value)
    if kind is float or kind is int:  # the common cases first: this runs per entry
        return float(value)
    if value is None or kind is bool:
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.removesuffix("s"))
        except ValueError:
            return None
    return None


# -- executions ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlatformExecution:
    """A Cloud Run execution, whichever API it came from. ``status`` is ``running``
    until its ``Completed`` condition says otherwise; times are epoch seconds."""

    execution_id: str
    job: str | None
    created_at: float | None
    started_at: float | None
    finished_at: float | None
    status: str
    message: str = ""
    reason: str = ""
    task_count: int | None = None
    succeeded_count: int = 0
    failed_count: int = 0
    retried_count: int = 0
    task_timeout_s: float | None = None
    max_retries: int | None = None

    def state(self) -> str:
        """What identifies this state of the execution; a change replaces its events."""
        return json.dumps(
            [
                self.started_at,
                self.finished_at,
                self.status,
                self.message,
                self.retried_count,
                self.created_at,
            ]
        )

    @property
    def budget_s(self) -> float | None:
        """The longest the platform lets it run: every attempt gets the full task timeout."""
        if self.task_timeout_s is None:
            return None
        return self.task_timeout_s * (1 + (self.max_retries or 0))

    def events(self) -> list[Event]:
        """Its steadyq events; none before it has started."""
        if self.started_at is None:
            return []
        started = self.started_at
        data: dict[str, Any] = {"source": SOURCE}
        if self.job:
            data["job"] = self.job
        if self.budget_s is not None:
            data["max_runtime_s"] = self.budget_s
        if self.task_timeout_s is not None:
            data["task_timeout_s"] = self.task_timeout_s
        if self.task_count is not None:
            data["task_count"] = self.task_count
        out = [
            Event(
                ev.EXECUTION_STARTED,
                started,
                message=f"execution {self.execution_id} started",
                execution_id=self.execution_id,
                data=data,
            )
        ]
        if self.created_at is not None:
            out.append(
                Event(
                    ev.EXECUTION_READY,
                    started,
                    message=f"execution {self.execution_id} started its tasks",
                    execution_id=self.execution_id,
                    duration_ms=max(0.0, started - self.created_at) * 1000.0,
                    data={"source": SOURCE},
                )
            )
        if self.status != "running" and self.finished_at is not None:
            ok = self.status == SUCCEEDED
            out.append(
                Event(
                    ev.EXECUTION_FINISHED,
                    max(self.finished_at, started),
                    severity="INFO" if ok else "ERROR",
                    message=self.message or f"execution {self.execution_id} {self.status}",
                    execution_id=self.execution_id,
                    reason=self.reason or None,
                    data={
                        "source": SOURCE,
                        "status": self.status,
                        "counts": {
                            "succeeded": self.succeeded_count,
                            "failed": self.failed_count,
                            "retried": self.retried_count,
                        },
                    },
                )
            )
        return out


def completed_status(state: str | None, message: str, reason: str = "") -> str:
    """steadyq's status for a ``Completed`` condition (``True``/``False``/``Unknown``)."""
    if state == "True":
        return SUCCEEDED
    if state == "False":
        if _TIMEOUT_TEXT.search(message) or reason == "DeadlineExceeded":
            return TIMED_OUT
        return FAILED
    return "running"


def execution_from_v1(doc: Mapping[str, Any]) -> PlatformExecution | None:
    """An execution from the v1 JSON ``gcloud run jobs executions list`` prints."""
    meta = doc.get("metadata")
    if not isinstance(meta, Mapping) or not isinstance(meta.get("name"), str):
        return None
    status = doc.get("status") if isinstance(doc.get("status"), Mapping) else {}
    assert isinstance(status, Mapping)
    spec = doc.get("spec") if isinstance(doc.get("spec"), Mapping) else {}
    assert isinstance(spec, Mapping)
    template = spec.get("template")
    task_spec = template.get("spec") if isinstance(template, Mapping) else None
    task_spec = task_spec if isinstance(task_spec, Mapping) else {}
    labels = meta.get("labels") if isinstance(meta.get("labels"), Mapping) else {}
    assert isinstance(labels, Mapping)
    completed: Mapping[str, Any] = {}
    for condition in status.get("conditions") or ():
        if isinstance(condition, Mapping) and condition.get("type") == "Completed":
            completed = condition
    message = str(completed.get("message") or "")
    reason = str(completed.get("reason") or "")
    state = completed.get("status")
    verdict = completed_status(state if isinstance(state, str) else None, message, reason)
    finished = parse_time(status.get("completionTime"))
    if verdict == "running" and finished is not None:
        verdict = FAILED  # completed without a verdict: not a success
    task_count = _number(spec.get("taskCount"))
    retries = _number(task_spec.get("maxRetries"))
    job = labels.get("run.googleapis.com/job")
    return PlatformExecution(
        execution_id=meta["name"],
        job=job if isinstance(job, str) else None,
        created_at=parse_time(meta.get("creationTimestamp")),
        started_at=parse_time(status.get("startTime")),
        finished_at=finished if verdict != "running" else None,
        status=verdict,
        message=message,
        reason=reason,
        task_count=None if task_count is None else int(task_count),
        succeeded_count=int(_number(status.get("succeededCount")) or 0),
        failed_count=int(_number(status.get("failedCount")) or 0),
        retried_count=int(_number(status.get("retriedCount")) or 0),
        task_timeout_s=_number(task_spec.get("timeoutSeconds")),
        max_retries=None if retries is None else int(retries),
    )


# -- log entries ----------------------------------------------------------------------

_LEVEL_WORD: Final = re.compile(
    r"^\s*[\[(<]?(DEBUG|INFO|NOTICE|WARNING|WARN|ERROR|ERR|CRITICAL|FATAL|ALERT|EMERGENCY)\b"
)
_LEVEL_KEY: Final = re.compile(r"\blevel[=:]\s*\"?(\w+)", re.IGNORECASE)
_ERROR_LINE: Final = re.compile(
    r"^(Traceback \(most recent call last\)|\w+(Error|Exception)\b[:(]|panic: |fatal error: )"
)
_LEVEL_NAMES: Final = {
    "DEBUG": "DEBUG",
    "INFO": "INFO",
    "NOTICE": "NOTICE",
    "WARN": "WARNING",
    "WARNING": "WARNING",
    "ERR": "ERROR",
    "ERROR": "ERROR",
    "CRITICAL": "CRITICAL",
    "FATAL": "CRITICAL",
    "ALERT": "ALERT",
    "EMERGENCY": "ALERT",
}


def infer_severity(text: str, log_name: str) -> str:
    """The severity of a line Cloud Logging gave none (``DEFAULT``).

    In order: a level word opening the line (``ERROR worker …``, ``[WARN] …``) or a
    ``level=error`` field; a traceback or an ``…Error:`` line is ERROR; any other line
    on stderr is WARNING (counted in ``logs.warnings`` and mined for error patterns,
    but not ERROR on its own); any other line elsewhere stays DEFAULT.
    """
    match = _LEVEL_WORD.match(text)
    if match is not None:
        return _LEVEL_NAMES[match.group(1)]
    match = _LEVEL_KEY.search(text[:200])
    if match is not None and match.group(1).upper() in _LEVEL_NAMES:
        return _LEVEL_NAMES[match.group(1).upper()]
    if _ERROR_LINE.match(text):
        return "ERROR"
    if log_name.endswith("stderr"):
        return "WARNING"
    return "DEFAULT"


def _label(labels: Mapping[str, Any], key: str) -> str | None:
    value = labels.get(key)
    if type(value) is str:
        return value or None
    return None if value is None or value == "" else str(value)


def _int(value: Any) -> int | None:
    if type(value) is str and value.isdigit():
        return int(value)
    number = _number(value)
    return None if number is None else int(number)


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


@dataclass
class EntryConverter:
    """Turns one LogEntry (a mapping in Google's JSON field names) into an event.

    ``rejection_patterns`` are regular expressions; an entry whose text one matches is
    a ``message.rejected``. A named group ``request_id`` gives the request id (else
    ``jsonPayload.request_id``), ``reason`` the reason code (else
    ``request_id_invalid``), ``message_id`` the message (else the request id: the same
    poison request rejected twice is a rejection that did not stick).
    """

    rejection_patterns: Sequence[re.Pattern[str]] = ()
    below_warning: int = field(default=0, init=False)  # entries converted to nothing

    @classmethod
    def compile(cls, patterns: Iterable[str]) -> EntryConverter:
        """Raises ConfigError: a pattern is not a regular expression."""
        compiled = []
        for text in patterns:
            try:
                compiled.append(re.compile(text))
            except re.error as exc:
                raise ConfigError(f"--rejection-pattern {text!r} is not a regex: {exc}") from exc
        return cls(tuple(compiled))

    def convert(self, entry: Mapping[str, Any]) -> Event | None:
        """The entry's event; None for an entry below WARNING that is not a steadyq
        event (it is not stored: a steadyq worker stores no such records either) or
        one without a timestamp."""
        ts = parse_time(entry.get("timestamp")) or parse_time(entry.get("receiveTimestamp"))
        if ts is None:
            self.below_warning += 1
            return None
        labels = entry.get("labels")
        if type(labels) is not dict:
            labels = labels if isinstance(labels, Mapping) else {}
        payload = entry.get("jsonPayload")
        text: str
        if payload is not None and (type(payload) is dict or isinstance(payload, Mapping)):
            inner = payload.get(LABELS_KEY)  # a line whose labels were not lifted
            if inner is not None and isinstance(inner, Mapping):
                labels = {**inner, **labels}
            kind = labels.get("kind")
            if kind in _EVENT_KINDS:
                return self._steadyq_event(str(kind), ts, entry, payload, labels)
            message = payload.get("message")
            text = message if isinstance(message, str) else json.dumps(payload, default=str)
        else:
            raw = entry.get("textPayload")
            text = raw if isinstance(raw, str) else ""
            payload = {}
        execution = _label(labels, EXECUTION_LABEL) or _str(payload.get("execution_id"))
        severity = entry.get("severity")
        if not isinstance(severity, str) or severity in ("", "DEFAULT"):
            log_name = entry.get("logName")
            severity = infer_severity(text, log_name if isinstance(log_name, str) else "")
        for pattern in self.rejection_patterns:
            match = pattern.search(text)
            if match is not None:
                return self._rejection(match, ts, severity, text, payload, labels, execution)
        if severity_rank(severity) < _WARNING_RANK:
            self.below_warning += 1
            return None
        attempt = _int(labels.get("run.googleapis.com/task_attempt"))
        return Event(
            ev.LOG,
            ts,
            severity=severity,
            message=text,
            execution_id=execution,
            attempt=None if attempt is None else attempt + 1,
        )

    @staticmethod
    def _steadyq_event(
        kind: str,
        ts: float,
        entry: Mapping[str, Any],
        payload: Mapping[str, Any],
        labels: Mapping[str, Any],
    ) -> Event:
        own = payload.get("timestamp")  # present when Cloud Run did not lift it
        own = None if own is None else parse_time(own)
        message = payload.get("message")
        text = message if isinstance(message, str) and message != kind else ""
        severity = entry.get("severity") or payload.get("severity") or "INFO"
        data = payload.get("data")
        duration = _number(payload.get("duration_ms"))
        return Event(
            kind,
            own if own is not None else ts,
            severity=str(severity),
            message=text,
            execution_id=_label(labels, "execution_id"),
            message_id=_label(labels, "message_id"),
            request_id=_label(labels, "request_id"),
            attempt=_int(labels.get("attempt")),
            reason=_label(labels, "reason"),
            duration_ms=duration,
            data=data if type(data) is dict else dict(data) if isinstance(data, Mapping) else {},
        )

    @staticmethod
    def _rejection(
        match: re.Match[str],
        ts: float,
        severity: str,
        text: str,
        payload: Mapping[str, Any],
        labels: Mapping[str, Any],
        execution: str | None,
    ) -> Event:
        groups = match.groupdict()
        request_id = _str(groups.get("request_id")) or _str(payload.get("request_id"))
        reason = _str(groups.get("reason")) or REQUEST_ID_INVALID
        message_id = _str(groups.get("message_id")) or _str(payload.get("message_id")) or request_id
        duration = _number(groups.get("duration_ms") or payload.get("duration_ms"))
        attempt = _int(labels.get("run.googleapis.com/task_attempt"))
        return Event(
            ev.MESSAGE_REJECTED,
            ts,
            severity=severity if severity_rank(severity) >= _WARNING_RANK else "WARNING",
            message=text,
            execution_id=execution,
            message_id=message_id,
            request_id=request_id,
            attempt=None if attempt is None else attempt + 1,
            reason=reason if reason in REASONS else REQUEST_ID_INVALID,
            duration_ms=duration,
            data={"source": "cloud_logging"} if reason in REASONS else {"pattern_reason": reason},
        )


def entry_key(entry: Mapping[str, Any]) -> str:
    """What makes an entry the same entry in two exports: its insertId and timestamp
    (Cloud Logging's own dedup key, less the log name); a hash of it without one."""
    insert_id = entry.get("insertId")
    if isinstance(insert_id, str) and insert_id:
        return f"{insert_id}|{entry.get('timestamp', '')}"
    body = json.dumps(entry, sort_keys=True, default=str).encode()
    return "sha1:" + hashlib.sha1(body, usedforsecurity=False).hexdigest()


def log_entry_for_line(
    line: str,
    *,
    insert_id: str,
    execution: str,
    job: str,
    project: str = "proj",
    region: str = "europe-west1",
    stream: str = "stdout",
    task_index: int = 0,
    task_attempt: int = 0,
    received: str | None = None,
) -> dict[str, Any]:
    """The LogEntry JSON Cloud Run makes of one line a job's container wrote.

    A JSON object line is structured: ``severity``, ``timestamp`` and
    ``logging.googleapis.com/labels`` are lifted out, the rest stays in
    ``jsonPayload``; any other line is a ``textPayload`` without severity. Used by the
    tests, the benchmark and ``examples/incident`` to make what gcloud would print.
    """
    labels = {
        EXECUTION_LABEL: execution,
        "run.googleapis.com/task_index": str(task_index),
        "run.googleapis.com/task_attempt": str(task_attempt),
    }
    entry: dict[str, Any] = {
        "insertId": insert_id,
        "logName": f"projects/{project}/logs/run.googleapis.com%2F{stream}",
        "resource": {
            "type": "cloud_run_job",
            "labels": {"job_name": job, "location": region, "project_id": project},
        },
    }
    try:
        record = json.loads(line)
    except ValueError:
        record = None
    if isinstance(record, dict):
        payload = dict(record)
        severity = payload.pop("severity", None)
        stamp = payload.pop("timestamp", None) or payload.pop("time", None)
        lifted = payload.pop(LABELS_KEY, None)
        if isinstance(lifted, dict):
            labels.update({str(k): str(v) for k, v in lifted.items()})
        if isinstance(severity, str):
            entry["severity"] = severity
        entry["jsonPayload"] = payload
        entry["timestamp"] = stamp or received
    else:
        entry["textPayload"] = line
        entry["timestamp"] = received
    entry["labels"] = labels
    entry["receiveTimestamp"] = received or entry["timestamp"]
    return entry


# -- streaming JSON -------------------------------------------------------------------


class TextStream(Protocol):
    """What :func:`iter_json` reads: a text file, or anything with its ``read``."""

    def read(self, size: int, /) -> str: ...


_CHUNK: Final = 1 << 20
_SPACE: Final = re.compile(r"[\s,]*")


def iter_json(stream: TextStream, *, chunk_chars: int = _CHUNK) -> Iterator[Any]:
    """The items of a JSON array, of JSON lines, or a single JSON value, read in chunks.

    Raises:
        ConfigError: the text is not JSON (the position is in the message).
    """
    decoder = json.JSONDecoder()
    buf = stream.read(chunk_chars)
    pos = _SPACE.match(buf).end()  # type: ignore[union-attr]
    eof = len(buf) < chunk_chars
    in_array = buf[pos : pos + 1] == "["
    if in_array:
        pos += 1
    consumed = 0
    while True:
        pos = _SPACE.match(buf, pos).end()  # type: ignore[union-attr]
        if pos >= len(buf) and not eof:
            consumed += pos
            buf, pos = stream.read(chunk_chars), 0
            eof = len(buf) < chunk_chars
            continue
        if pos >= len(buf):
            if in_array:
                raise ConfigError("the JSON array is not closed: the file is cut short")
            return
        if in_array and buf[pos] == "]":
            return
        try:
            item, end = decoder.raw_decode(buf, pos)
        except json.JSONDecodeError as exc:
            if eof:
                raise ConfigError(f"not JSON at character {consumed + exc.pos}: {exc.msg}") from exc
            more = stream.read(chunk_chars)
            eof = len(more) < chunk_chars
            consumed += pos
            buf, pos = buf[pos:] + more, 0
            continue
        yield item
        pos = end


# -- importing ------------------------------------------------------------------------


@dataclass
class ImportCounts:
    """What one import did."""

    executions_new: int = 0
    executions_updated: int = 0
    executions_unchanged: int = 0
    executions_not_started: int = 0
    entries_new: int = 0
    entries_duplicate: int = 0
    entries_not_stored: int = 0
    rejections: int = 0
    steadyq_events: int = 0
    subscriptions: int = 0
    skipped: int = 0

    def merge(self, other: ImportCounts) -> None:
        for name, value in vars(other).items():
            setattr(self, name, getattr(self, name) + value)

    def to_dict(self) -> dict[str, int]:
        return dict(vars(self))


def item_kind(item: Any) -> str | None:
    """``execution``, ``entry`` or ``subscription`` for an item of a gcloud export."""
    if not isinstance(item, Mapping):
        return None
    if item.get("kind") == "Execution" or ("metadata" in item and "status" in item):
        return "execution"
    if "logName" in item or "insertId" in item or "textPayload" in item or "jsonPayload" in item:
        return "entry"
    if "topic" in item or "ackDeadlineSeconds" in item:
        return "subscription"
    return None


_EXECUTION_KINDS: Final = (ev.EXECUTION_STARTED, ev.EXECUTION_READY, ev.EXECUTION_FINISHED)
# the kinds the store derives its executions and ledger views from
_DERIVED_KINDS: Final = frozenset(
    (
        *_EXECUTION_KINDS,
        ev.MESSAGE_PUBLISHED,
        ev.MESSAGE_RECEIVED,
        ev.MESSAGE_FAILED,
        ev.MESSAGE_TIMED_OUT,
        ev.MESSAGE_SUCCEEDED,
        ev.MESSAGE_DEAD_LETTERED,
        ev.MESSAGE_REJECTED,
    )
)
_DERIVED_SQL: Final = ",".join(f"'{k}'" for k in sorted(_DERIVED_KINDS))
_EXECUTION_SQL: Final = ",".join(f"'{k}'" for k in _EXECUTION_KINDS)


def _forget_platform_execution(conn: sqlite3.Connection, name: str) -> None:
    """Drop the events and the row an imported Cloud Run execution wrote."""
    conn.execute(
        "DELETE FROM events WHERE execution_id = ? AND kind IN (?,?,?)"
        " AND json_extract(data, '$.source') = ?",
        (name, ev.EXECUTION_STARTED, ev.EXECUTION_READY, ev.EXECUTION_FINISHED, SOURCE),
    )
    conn.execute("DELETE FROM executions WHERE execution_id = ?", (name,))


def _regresses(stored: str, item: PlatformExecution) -> bool:
    """Whether ``item`` is an older view of a stored execution: an export taken while
    it ran, imported after one taken when it had finished."""
    try:
        status = json.loads(stored)[2]
    except (ValueError, IndexError, TypeError):
        return False
    return status != "running" and item.status == "running"


class Importer:
    """Writes converted executions and entries into a SQLite store, idempotently.

    Bookkeeping tables (``gcloud_entries``, ``gcloud_executions``,
    ``gcloud_subscriptions``, ``gcloud_cursors``) live in the store's file beside the
    events, written in the same transactions, so an import that dies half-way leaves
    nothing counted twice when it runs again.
    """

    def __init__(
        self, store: SqliteStore, converter: EntryConverter | None = None, *, batch: int = 10000
    ) -> None:
        self.store = store
        self.converter = converter or EntryConverter()
        self.batch = max(1, batch)
        self._stale = False  # events went in out of time order: the views need deriving
        with store.db.transaction() as conn:
            for statement in IMPORT_SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
        with store.db.reading() as conn:
            # a bulk import keeps four B-trees growing at once; SQLite's default 2 MB page
            # cache makes each insert read its index pages back from the OS
            conn.execute(f"PRAGMA cache_size=-{_CACHE_KB}")

    def executions(self, items: Iterable[PlatformExecution]) -> ImportCounts:
        """Store executions; a known one is rewritten only when its state changed."""
        counts = ImportCounts()
        rows = list(items)
        with self.store.db.transaction() as conn:
            for item in rows:
                if item.started_at is None:
                    counts.executions_not_started += 1
                    continue
                state = item.state()
                row = conn.execute(
                    "SELECT state FROM gcloud_executions WHERE name = ?", (item.execution_id,)
                ).fetchone()
                if row is not None and (row[0] == state or _regresses(row[0], item)):
                    counts.executions_unchanged += 1
                    continue
                if row is not None:
                    counts.executions_updated += 1
                    _forget_platform_execution(conn, item.execution_id)  # replaced
                else:
                    counts.executions_new += 1
                worker_run = conn.execute(
                    "SELECT 1 FROM gcloud_worker_runs WHERE name = ?", (item.execution_id,)
                ).fetchone()
                if worker_run is None:
                    write_events(conn, item.events())
                conn.execute(
                    "INSERT INTO gcloud_executions (name, state) VALUES (?, ?)"
                    " ON CONFLICT (name) DO UPDATE SET state = excluded.state",
                    (item.execution_id, state),
                )
        return counts

    def entries(
        self,
        items: Iterable[Mapping[str, Any]],
        *,
        progress: Callable[[int], None] | None = None,
        derive: bool = True,
    ) -> ImportCounts:
        """Store log entries not seen before, in batches of ``batch``. With
        ``derive=False`` the views are left for :meth:`finish` (several files, one pass)."""
        counts = ImportCounts()
        pending: list[tuple[str, Event | None, str | None]] = []
        convert = self.converter.convert
        with self.store.db.reading() as conn:
            latest = conn.execute(
                f"SELECT max(ts) FROM events WHERE kind IN ({_DERIVED_SQL})"
            ).fetchone()[0]
        latest = -math.inf if latest is None else float(latest)
        in_order = True
        for entry in items:
            event = convert(entry)
            worker_run = None
            if event is not None and event.kind in _DERIVED_KINDS:
                if event.timestamp < latest:
                    in_order = False
                latest = max(latest, event.timestamp)
            if event is not None and event.kind == ev.EXECUTION_STARTED:
                labels = entry.get("labels")
                if isinstance(labels, Mapping):
                    worker_run = _label(labels, EXECUTION_LABEL)
            pending.append((entry_key(entry), event, worker_run))
            if len(pending) >= self.batch:
                # views are derived as events are written only while they come in order;
                # after that the events go in alone and the views are derived once, at the end
                self._write_entries(pending, counts, views=in_order and not self._stale)
                if progress is not None:
                    progress(len(pending))
                pending = []
        if pending:
            self._write_entries(pending, counts, views=in_order and not self._stale)
            if progress is not None:
                progress(len(pending))
        if not in_order:
            self._stale = True
        if derive:
            self.finish()
        return counts

    def finish(self) -> None:
        """Derive the views once, if an import brought events out of time order."""
        if self._stale:
            self.rebuild_views()
            self._stale = False

    def rebuild_views(self) -> None:
        """Derive the executions and ledger views again from the events, in time order.

        The store derives them as events are written, which assumes events come in
        the order they happened; gcloud prints newest first, and overlapping exports
        interleave. One ordered pass over the steadyq events puts them right.
        """
        with self.store.db.transaction() as conn:
            conn.execute(
                f"DELETE FROM executions WHERE execution_id IN (SELECT execution_id FROM"
                f" events WHERE kind IN ({_EXECUTION_SQL}))"
            )
            conn.execute("DELETE FROM requests")
            cursor = conn.execute(
                f"SELECT {EVENT_COLUMNS} FROM events WHERE kind IN ({_DERIVED_SQL}) ORDER BY ts, id"
            )
            while True:
                rows = cursor.fetchmany(20000)
                if not rows:
                    break
                apply_prepared(conn, prepare_events([row_to_event(r) for r in rows], rows=False))

    def _write_entries(
        self,
        pending: list[tuple[str, Event | None, str | None]],
        counts: ImportCounts,
        *,
        views: bool,
    ) -> None:
        fresh: list[Event] = []
        new_keys: list[tuple[str]] = []
        worker_runs: list[str] = []
        with self.store.db.transaction() as conn:
            keys = [p[0] for p in pending]
            known: set[str] = set()
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                sql = f"SELECT key FROM gcloud_entries WHERE key IN ({marks})"
                known.update(row[0] for row in conn.execute(sql, chunk))
            for key, event, worker_run in pending:
                if key in known:
                    counts.entries_duplicate += 1
                    continue
                known.add(key)
                new_keys.append((key,))
                counts.entries_new += 1
                if event is None:
                    counts.entries_not_stored += 1
                    continue
                fresh.append(event)
                if worker_run is not None:
                    worker_runs.append(worker_run)
                if event.kind == ev.MESSAGE_REJECTED:
                    counts.rejections += 1
                elif event.kind != ev.LOG:
                    counts.steadyq_events += 1
            conn.executemany("INSERT INTO gcloud_entries (key) VALUES (?)", new_keys)
            for name in worker_runs:
                added = conn.execute(
                    "INSERT OR IGNORE INTO gcloud_worker_runs (name) VALUES (?)", (name,)
                ).rowcount
                if added:
                    # a steadyq worker ran this execution: its own events replace the platform's
                    _forget_platform_execution(conn, name)
            if views:
                write_events(conn, fresh)
            else:
                insert_events_only(conn, fresh)

    def subscription(self, doc: Mapping[str, Any]) -> ImportCounts:
        """Keep a subscription's description (its dead-letter policy, for reports).
        It holds no backlog figures: those exist only in Cloud Monitoring."""
        name = doc.get("name")
        if not isinstance(name, str):
            return ImportCounts(skipped=1)
        with self.store.db.transaction() as conn:
            conn.execute(
                "INSERT INTO gcloud_subscriptions (name, doc) VALUES (?, ?)"
                " ON CONFLICT (name) DO UPDATE SET doc = excluded.doc",
                (name, json.dumps(doc, sort_keys=True, default=str)),
            )
        return ImportCounts(subscriptions=1)

    def cursor(self, key: str) -> float | None:
        """A live source's high-water mark, kept in the store (so a resumed watch keeps it)."""
        with self.store.db.reading() as conn:
            row = conn.execute("SELECT value FROM gcloud_cursors WHERE key = ?", (key,)).fetchone()
        return None if row is None else float(row[0])

    def set_cursor(self, key: str, value: float) -> None:
        with self.store.db.transaction() as conn:
            conn.execute(
                "INSERT INTO gcloud_cursors (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    def stream(
        self,
        stream: TextStream,
        *,
        progress: Callable[[int], None] | None = None,
        derive: bool = True,
    ) -> ImportCounts:
        """Import one gcloud export of any of the three kinds (mixed is fine).

        Raises:
            ConfigError: the text is not JSON.
            BackendError: the store failed.
        """
        counts = ImportCounts()
        executions: list[PlatformExecution] = []

        def entries() -> Iterator[Mapping[str, Any]]:
            for item in iter_json(stream):
                kind = item_kind(item)
                if kind == "entry":
                    yield item
                elif kind == "execution":
                    execution = execution_from_v1(item)
                    if execution is None:
                        counts.skipped += 1
                    else:
                        executions.append(execution)
                elif kind == "subscription":
                    counts.merge(self.subscription(item))
                else:
                    counts.skipped += 1

        counts.merge(self.entries(entries(), progress=progress, derive=derive))
        if executions:
            counts.merge(self.executions(executions))
        return counts
