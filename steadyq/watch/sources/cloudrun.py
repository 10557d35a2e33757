"""``cloudrun://PROJECT/REGION/JOB``: a Cloud Run Job watched live through Google's APIs.

At every checkpoint :meth:`CloudRunSource.sync` lists the job's executions
(google-cloud-run, Cloud Run Admin v2) and the log entries since the last sync
(google-cloud-logging, with a timestamp filter and paging), converts both with
:mod:`steadyq.watch.sources.gcloud` and imports them into the watch's SQLite store.
:meth:`CloudRunSource.queue_sample` reads the subscription's
``num_undelivered_messages`` and ``oldest_unacked_message_age`` from Cloud Monitoring
(the subscription resource itself has no such figures).

The client libraries are an optional extra (``pip install steadyq[gcp]``), imported
only when a source is built. Credentials are Application Default Credentials unless
given. The clients retry transient errors themselves (with ``retry``); what is still
failing after that is :class:`~steadyq.watch.sources.base.SourceUnavailable`, which the
watch retries with backoff.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final
from urllib.parse import urlsplit

from steadyq.durations import rfc3339
from steadyq.errors import BackendError, ConfigError
from steadyq.telemetry.store_sqlite import SqliteStore
from steadyq.watch.sources.base import PlatformSource, SourceUnavailable, SyncReport
from steadyq.watch.sources.gcloud import (
    EntryConverter,
    Importer,
    PlatformExecution,
    completed_status,
)

__all__ = ["CloudRunSource", "execution_from_v2", "parse_source_url"]

GCP_EXTRA: Final = "pip install 'steadyq[gcp]'"
NO_CREDENTIALS: Final = (
    "no Google Cloud credentials: run `gcloud auth application-default login`, or set"
    " GOOGLE_APPLICATION_CREDENTIALS to a service account key file"
)
# entries reach Cloud Logging a little after their timestamp: each sync reads this far
# back again (what it had already is recognised by its insertId)
LOOKBACK_S: Final = 300.0
_UNDELIVERED: Final = "pubsub.googleapis.com/subscription/num_undelivered_messages"
_OLDEST: Final = "pubsub.googleapis.com/subscription/oldest_unacked_message_age"


def parse_source_url(url: str) -> tuple[str, str, str]:
    """(project, region, job) of ``cloudrun://PROJECT/REGION/JOB``.

    Raises:
        ConfigError: the URL is not of that shape.
    """
    parts = urlsplit(url)
    names = [parts.netloc, *parts.path.strip("/").split("/")]
    if parts.scheme != "cloudrun" or len(names) != 3 or not all(names):
        raise ConfigError(f"--source {url!r}: expected cloudrun://PROJECT/REGION/JOB")
    return names[0], names[1], names[2]


def parse_subscription_url(url: str) -> tuple[str, str]:
    """(project, subscription id) of ``pubsub://PROJECT/SUBSCRIPTION``.

    Raises:
        ConfigError: the URL is not of that shape.
    """
    parts = urlsplit(url)
    sub = parts.path.strip("/").rsplit("/", 1)[-1]
    if parts.scheme != "pubsub" or not parts.netloc or not sub:
        raise ConfigError(f"--subscription {url!r}: expected pubsub://PROJECT/SUBSCRIPTION")
    return parts.netloc, sub


def _pb(message: Any) -> Any:
    """The raw protobuf under a proto-plus message (attribute access is much faster)."""
    return type(message).pb(message)


def _stamp(ts: Any) -> float | None:
    seconds = ts.seconds + ts.nanos / 1e9
    return seconds if seconds > 0 else None


def execution_from_v2(execution: Any) -> PlatformExecution:
    """An execution from a ``google.cloud.run_v2.Execution``."""
    pb = _pb(execution)
    completed = None
    for condition in pb.conditions:
        if condition.type_ == "Completed":
            completed = condition
    message = reason = ""
    state: str | None = None
    if completed is not None:
        from google.cloud.run_v2.types import Condition

        message = completed.message
        value = Condition.State(completed.state)
        state = {"CONDITION_SUCCEEDED": "True", "CONDITION_FAILED": "False"}.get(value.name)
        if completed.WhichOneof("reasons") == "execution_reason":
            reason = Condition.ExecutionReason(completed.execution_reason).name
    status = completed_status(state, message, reason)
    finished = _stamp(pb.completion_time) if pb.HasField("completion_time") else None
    if status == "running" and finished is not None:
        status = "failed"
    template = pb.template
    timeout = template.timeout.seconds + template.timeout.nanos / 1e9
    return PlatformExecution(
        execution_id=pb.name.rsplit("/", 1)[-1],
        job=pb.job or None,
        created_at=_stamp(pb.create_time) if pb.HasField("create_time") else None,
        started_at=_stamp(pb.start_time) if pb.HasField("start_time") else None,
        finished_at=finished if status != "running" else None,
        status=status,
        message=message,
        reason=reason,
        task_count=pb.task_count or None,
        succeeded_count=pb.succeeded_count,
        failed_count=pb.failed_count,
        retried_count=pb.retried_count,
        task_timeout_s=timeout or None,
        max_retries=template.max_retries if template.HasField("max_retries") else None,
    )


def _value(value: Any) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        number = value.number_value
        return int(number) if number.is_integer() and abs(number) < 2**53 else number
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return _struct(value.struct_value)
    if kind == "list_value":
        return [_value(v) for v in value.list_value.values]
    return None


def _struct(struct: Any) -> dict[str, Any]:
    return {key: _value(v) for key, v in struct.fields.items()}


def entry_doc(entry: Any, severity_name: Callable[[int], str]) -> dict[str, Any]:
    """A ``google.cloud.logging_v2.types.LogEntry`` in the JSON shape gcloud prints
    (the timestamp as epoch seconds), for :class:`EntryConverter`."""
    pb = _pb(entry)
    doc: dict[str, Any] = {
        "insertId": pb.insert_id,
        "logName": pb.log_name,
        "timestamp": _stamp(pb.timestamp),
        "labels": dict(pb.labels),
    }
    if pb.severity:
        doc["severity"] = severity_name(pb.severity)
    payload = pb.WhichOneof("payload")
    if payload == "text_payload":
        doc["textPayload"] = pb.text_payload
    elif payload == "json_payload":
        doc["jsonPayload"] = _struct(pb.json_payload)
    if pb.HasField("receive_timestamp"):
        doc["receiveTimestamp"] = _stamp(pb.receive_timestamp)
    return doc


class CloudRunSource(PlatformSource):
    """A Cloud Run Job, its logs, and (optionally) its Pub/Sub subscription's backlog.

    Args:
        url: ``cloudrun://PROJECT/REGION/JOB``.
        store: the SQLite store the watch reads; imports land there.
        subscription: ``pubsub://PROJECT/SUBSCRIPTION`` whose backlog is sampled.
        converter: how log entries become events (``--rejection-pattern``).
        credentials: google-auth credentials (default: Application Default Credentials).
        endpoint: ``host:port`` of every API instead of Google's (tests, proxies).
        insecure: talk plain gRPC to ``endpoint`` (a local server; never Google's).
        retry: a ``google.api_core.retry.Retry`` for every call (default: the clients').
        page_size: log entries per page.
    """

    def __init__(
        self,
        url: str,
        store: SqliteStore,
        *,
        subscription: str | None = None,
        converter: EntryConverter | None = None,
        credentials: Any = None,
        endpoint: str | None = None,
        insecure: bool = False,
        retry: Any = None,
        timeout_s: float = 60.0,
        page_size: int = 1000,
    ) -> None:
        self._url = url
        self.project, self.region, self.job = parse_source_url(url)
        self.subscription = None if subscription is None else parse_subscription_url(subscription)
        self.importer = Importer(store, converter)
        self._credentials = credentials
        self._endpoint = endpoint
        self._insecure = insecure
        self._retry = retry
        self._timeout_s = timeout_s
        self._page_size = page_size
        self._clients: dict[str, Any] = {}
        self._channels: list[Any] = []
        self._load_libraries()
        # built now, so that missing credentials stop the watch before it waits for anything
        self._executions_client()
        self._logging_client()
        if self.subscription is not None:
            self._monitoring_client()

    @property
    def url(self) -> str:
        return self._url

    @staticmethod
    def _load_libraries() -> None:
        try:
            import google.cloud.logging_v2
            import google.cloud.monitoring_v3
            import google.cloud.run_v2  # noqa: F401
        except ImportError as exc:
            raise ConfigError(
                f"the cloudrun:// source needs Google's client libraries: {GCP_EXTRA}"
                f" ({exc.name or exc} is missing)"
            ) from exc

    # -- clients --

    def _client(self, name: str, client_cls: Any, transport_cls: Any) -> Any:
        client = self._clients.get(name)
        if client is not None:
            return client
        from google.auth import exceptions as auth_errors

        options = None if self._endpoint is None else {"api_endpoint": self._endpoint}
        try:
            if self._insecure:
                import grpc

                def transport(**kwargs: Any) -> Any:
                    channel = grpc.insecure_channel(kwargs["host"])
                    self._channels.append(channel)
                    kwargs.pop("credentials_file", None)
                    return transport_cls(**{**kwargs, "channel": channel})

                client = client_cls(
                    credentials=self._credentials, client_options=options, transport=transport
                )
            else:
                client = client_cls(credentials=self._credentials, client_options=options)
        except auth_errors.DefaultCredentialsError as exc:
            raise ConfigError(NO_CREDENTIALS) from exc
        self._clients[name] = client
        return client

    def _executions_client(self) -> Any:
        from google.cloud import run_v2
        from google.cloud.run_v2.services.executions.transports import ExecutionsGrpcTransport

        return self._client("run", run_v2.ExecutionsClient, ExecutionsGrpcTransport)

    def _logging_client(self) -> Any:
        from google.cloud.logging_v2.services.logging_service_v2 import LoggingServiceV2Client
        from google.cloud.logging_v2.services.logging_service_v2.transports import (
            LoggingServiceV2GrpcTransport,
        )

        return self._client("logging", LoggingServiceV2Client, LoggingServiceV2GrpcTransport)

    def _monitoring_client(self) -> Any:
        from google.cloud import monitoring_v3
        from google.cloud.monitoring_v3.services.metric_service.transports import (
            MetricServiceGrpcTransport,
        )

        return self._client(
            "monitoring", monitoring_v3.MetricServiceClient, MetricServiceGrpcTransport
        )

    def _call_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"timeout": self._timeout_s}
        if self._retry is not None:
            options["retry"] = self._retry
        return options

    @contextlib.contextmanager
    def _mapped(self, what: str) -> Iterator[None]:
        """Google's errors as steadyq's: transient ones may pass, the rest will not."""
        from google.api_core import exceptions as api
        from google.auth import exceptions as auth_errors

        try:
            yield
        except auth_errors.DefaultCredentialsError as exc:
            raise ConfigError(NO_CREDENTIALS) from exc
        except auth_errors.TransportError as exc:
            raise SourceUnavailable(f"{what}: cannot refresh credentials: {exc}") from exc
        except (api.PermissionDenied, api.Unauthenticated) as exc:
            raise BackendError(
                f"{what}: {type(exc).__name__.lower().replace('denied', ' denied')}: {exc.message}"
            ) from exc
        except api.NotFound as exc:
            raise ConfigError(f"{what}: not found: {exc.message}") from exc
        except (
            api.ServiceUnavailable,
            api.ResourceExhausted,
            api.DeadlineExceeded,
            api.InternalServerError,
            api.Aborted,
            api.RetryError,
        ) as exc:
            message = getattr(exc, "message", None) or str(exc)
            raise SourceUnavailable(f"{what}: {type(exc).__name__}: {message}") from exc
        except api.GoogleAPICallError as exc:
            raise BackendError(f"{what}: {type(exc).__name__}: {exc.message}") from exc

    # -- the contract --

    def sync(self, until: float, *, earliest: float) -> SyncReport:
        report = SyncReport(until=until)
        with self._mapped("Cloud Run (list executions)"):
            executions = self._list_executions(earliest)
        counts = self.importer.executions(executions)
        report.executions = counts.executions_new + counts.executions_updated
        key = f"{self._url}|entries"
        cursor = self.importer.cursor(key)
        since = earliest if cursor is None else max(earliest, cursor - LOOKBACK_S)
        if since < until:
            with self._mapped("Cloud Logging (list entries)"):
                entries = self.importer.entries(self._list_entries(since, until))
            report.entries = entries.entries_new
            report.duplicates = entries.entries_duplicate
            report.details = entries.to_dict()
        # moved only after everything before ``until`` is in: a failed sync reads it all again
        self.importer.set_cursor(key, max(until, cursor or until))
        return report

    def _list_executions(self, earliest: float) -> list[PlatformExecution]:
        client = self._executions_client()
        parent = f"projects/{self.project}/locations/{self.region}/jobs/{self.job}"
        found: list[PlatformExecution] = []
        for execution in client.list_executions(parent=parent, **self._call_options()):
            item = execution_from_v2(execution)
            ended = item.finished_at
            if ended is not None and ended < earliest:
                continue  # over before anything the watch judges
            found.append(item)
        return found

    def _list_entries(self, since: float, until: float) -> Iterator[Mapping[str, Any]]:
        from google.cloud.logging_v2.types import ListLogEntriesRequest
        from google.logging.type import log_severity_pb2

        name = log_severity_pb2.LogSeverity.Name
        client = self._logging_client()
        request = ListLogEntriesRequest(
            resource_names=[f"projects/{self.project}"],
            filter=(
                f'resource.type="cloud_run_job" AND resource.labels.job_name="{self.job}"'
                f' AND resource.labels.location="{self.region}"'
                f' AND timestamp>="{rfc3339(since)}" AND timestamp<"{rfc3339(until)}"'
            ),
            order_by="timestamp asc",
            page_size=self._page_size,
        )
        pager = client.list_log_entries(request=request, **self._call_options())
        for entry in pager:
            yield entry_doc(entry, name)

    def queue_sample(self, at: float) -> Mapping[str, float | int | None] | None:
        if self.subscription is None:
            return None
        with self._mapped("Cloud Monitoring (list time series)"):
            ready = self._latest(_UNDELIVERED, at)
            oldest = self._latest(_OLDEST, at)
        if ready is None and oldest is None:
            return None
        return {
            "queue.ready": None if ready is None else int(ready),
            "queue.in_flight": None,
            "queue.delayed": None,
            "queue.oldest_unacked_age_s": oldest,
            "dlq.size": None,
        }

    def _latest(self, metric: str, at: float) -> float | None:
        """The newest point of ``metric`` at or before ``at`` (within ten minutes)."""
        from google.cloud import monitoring_v3

        assert self.subscription is not None
        project, sub = self.subscription
        request = monitoring_v3.ListTimeSeriesRequest(
            name=f"projects/{project}",
            filter=(
                f'metric.type="{metric}" AND resource.type="pubsub_subscription"'
                f' AND resource.labels.subscription_id="{sub}"'
            ),
            interval=monitoring_v3.TimeInterval(
                end_time={"seconds": int(at)}, start_time={"seconds": int(at) - 600}
            ),
            view=monitoring_v3.ListTimeSeriesRequest.TimeSeriesView.FULL,
        )
        client = self._monitoring_client()
        best: tuple[float, float] | None = None
        for series in client.list_time_series(request=request, **self._call_options()):
            for point in _pb(series).points:
                end = _stamp(point.interval.end_time) or 0.0
                value = point.value
                number = (
                    float(value.int64_value)
                    if value.WhichOneof("value") == "int64_value"
                    else float(value.double_value)
                )
                if end <= at + 1e-6 and (best is None or end > best[0]):
                    best = (end, number)
        return None if best is None else best[1]

    def close(self) -> None:
        for channel in self._channels:
            channel.close()
        self._channels.clear()
        self._clients.clear()


def open_source(
    url: str,
    store: SqliteStore,
    *,
    subscription: str | None = None,
    converter: EntryConverter | None = None,
) -> PlatformSource:
    """The platform source a ``--source`` URL names.

    Raises:
        ConfigError: an unknown scheme, a malformed URL, or missing libraries.
    """
    if urlsplit(url).scheme == "cloudrun":
        return CloudRunSource(url, store, subscription=subscription, converter=converter)
    raise ConfigError(f"unknown --source {url!r}: expected cloudrun://PROJECT/REGION/JOB")
