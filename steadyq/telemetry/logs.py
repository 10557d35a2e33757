"""Events as JSON lines in Cloud Logging's structured-logging shape.

Cloud Run forwards a JSON line on stdout to Cloud Logging, which lifts
``severity``, ``message``, ``timestamp`` and ``logging.googleapis.com/labels`` out of
the payload. Everything else stays in ``jsonPayload``. The local store and a deployed
worker's logs therefore tell the same story.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from collections.abc import Callable
from typing import IO, Any

from steadyq.durations import rfc3339
from steadyq.telemetry.events import LOG, MESSAGE_SUCCEEDED, Event, severity_rank, storable_text

LABELS_KEY = "logging.googleapis.com/labels"


#: A success's recorded result longer than this (as JSON) is summarised on its printed
#: line: the content workload's manifest would otherwise fill a screen per message.
PRINTED_RESULT_BYTES = 512


def printed_data(event: Event) -> dict[str, Any]:
    """``event.data`` as a printed line shows it: a long handler result keeps only its
    ``artifacts`` and the names of the other keys (the store keeps it whole)."""
    data = dict(event.data)
    result = data.get("result")
    if event.kind != MESSAGE_SUCCEEDED or not isinstance(result, dict):
        return data
    try:
        size = len(json.dumps(result, default=str))
    except (TypeError, ValueError):
        size = PRINTED_RESULT_BYTES + 1
    if size > PRINTED_RESULT_BYTES:
        brief: dict[str, Any] = {"omitted": sorted(str(k) for k in result if k != "artifacts")}
        if "artifacts" in result:
            brief["artifacts"] = result["artifacts"]
        data["result"] = brief
    return data


def cloud_logging_line(event: Event, *, brief: bool = False) -> str:
    """One JSON line for ``event``; always ASCII, so any bytes from a message are escaped.

    ``brief`` shortens a long handler result (see :func:`printed_data`)."""
    labels = {"kind": event.kind}
    for key in ("execution_id", "message_id", "request_id", "reason"):
        value = getattr(event, key)
        if value is not None:
            labels[key] = str(value)
    if event.attempt is not None:
        labels["attempt"] = str(event.attempt)
    record: dict[str, Any] = {
        "severity": event.severity,
        "message": event.message or event.kind,
        "timestamp": rfc3339(event.timestamp),
        LABELS_KEY: labels,
    }
    if event.duration_ms is not None:
        record["duration_ms"] = round(event.duration_ms, 3)
    if event.data:
        record["data"] = printed_data(event) if brief else dict(event.data)
    return json.dumps(record, ensure_ascii=True, default=str, separators=(",", ":"))


class JsonLinesSink:
    """Writes events to a text stream, one Cloud Logging JSON line each.

    Log records below ``min_severity`` are skipped; a success's long result is
    summarised (``brief``)."""

    def __init__(
        self,
        stream: IO[str] | None = None,
        *,
        min_severity: str = "DEBUG",
        brief: bool = True,
    ) -> None:
        self._stream = stream
        self._min_rank = severity_rank(min_severity)
        self._brief = brief

    def __call__(self, event: Event) -> None:
        if event.kind == LOG and severity_rank(event.severity) < self._min_rank:
            return
        stream = self._stream or sys.stdout
        stream.write(cloud_logging_line(event, brief=self._brief) + "\n")

    def flush(self) -> None:
        stream = self._stream or sys.stdout
        stream.flush()


_LEVEL_TO_SEVERITY = {
    logging.DEBUG: "DEBUG",
    logging.INFO: "INFO",
    logging.WARNING: "WARNING",
    logging.ERROR: "ERROR",
    logging.CRITICAL: "CRITICAL",
}


def severity_of(levelno: int) -> str:
    """Cloud Logging's severity name for a :mod:`logging` level number."""
    best = "DEFAULT"
    for level, name in sorted(_LEVEL_TO_SEVERITY.items()):
        if levelno >= level:
            best = name
    return best


class EventLogHandler(logging.Handler):
    """A :mod:`logging` handler that turns records into ``log`` events.

    Handlers log through ``ctx.logger``; the worker installs one of these so the
    records of WARNING and above land in the telemetry store with the labels of the
    call that wrote them.
    """

    def __init__(
        self,
        emit: Callable[[Event], None],
        *,
        labels: dict[str, Any] | None = None,
        clock: Callable[[], float],
        level: int = logging.WARNING,
    ) -> None:
        super().__init__(level)
        self._emit = emit
        self.labels: dict[str, Any] = dict(labels or {})
        self._clock = clock

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                trace = "".join(traceback.format_exception(*record.exc_info))
                text += "\n" + trace[-2000:]
            self._emit(
                Event(
                    kind=LOG,
                    timestamp=self._clock(),
                    severity=severity_of(record.levelno),
                    message=storable_text(text),
                    execution_id=self.labels.get("execution_id"),
                    message_id=self.labels.get("message_id"),
                    request_id=self.labels.get("request_id"),
                    attempt=self.labels.get("attempt"),
                    data={"logger": record.name},
                )
            )
        except Exception:  # logging must never break the handler that logged
            self.handleError(record)
