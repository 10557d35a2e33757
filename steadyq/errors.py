"""The one exception tree of steadyq.

Every error steadyq raises on purpose derives from :class:`SteadyqError`; driver
errors (sqlite3, psycopg, google-api-core) are caught at the backend boundary and
re-raised as one of these, with the original chained as ``__cause__``::

    SteadyqError
    ├── ConfigError            bad settings, URL, plan or handler spec
    │   ├── HandlerLoadError   ``module:callable`` cannot be imported or called
    │   └── MissingExtra       an optional driver is not installed: pip install 'steadyq[…]'
    ├── BackendError           a queue or telemetry backend failed
    │   ├── BackendUnavailable cannot open or reach the backend at all
    │   └── LeaseLost          the delivery is no longer leased by this caller
    ├── NotFound               no such message, execution or dead letter
    ├── ReplayRefused          the dead-letter replay loop guard said no
    ├── AlreadyRunning         another process runs this already (a watch of the plan)
    └── PermanentError         raised by a handler: dead-letter now, never retry
"""

from __future__ import annotations


class SteadyqError(Exception):
    """Root of every error steadyq raises on purpose."""


class ConfigError(SteadyqError):
    """Settings, a backend URL, a plan or a handler spec is unusable."""


class HandlerLoadError(ConfigError):
    """The handler named by ``module:callable`` cannot be loaded."""


# the top-level modules of steadyq's optional extras (pyproject.toml), by extra: a
# ModuleNotFoundError for one of them is a MissingExtra, whoever imported it
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "content": ("PIL", "av"),
    "dashboard": ("starlette", "uvicorn", "prometheus_client"),
    "pubsub": ("google.pubsub_v1", "google.cloud.pubsub", "google.cloud.pubsub_v1"),
    "monitoring": ("google.cloud.monitoring_v3",),
    "gcp": ("google.cloud.run_v2", "google.cloud.logging_v2", "google.cloud.logging"),
    "postgres": ("psycopg", "psycopg_pool"),
}


class MissingExtra(ConfigError):
    """An optional driver is not installed; the message names the extra to install.

    ``feature`` says what needed it (``pubsub://``, ``the dashboard``), ``module`` which
    module is missing, ``extra`` the ``steadyq[extra]`` that brings it.
    """

    def __init__(self, feature: str, extra: str, module: str | None = None) -> None:
        missing = f" ({module} is not installed)" if module else ""
        super().__init__(
            f"{feature} needs steadyq[{extra}]: pip install 'steadyq[{extra}]'{missing}"
        )
        self.feature = feature
        self.extra = extra
        self.module = module

    def __reduce__(self) -> tuple[object, ...]:
        return (MissingExtra, (self.feature, self.extra, self.module))


def missing_extra(exc: ImportError, feature: str | None = None) -> MissingExtra | None:
    """The :class:`MissingExtra` an import error means, or None when the missing
    module belongs to no steadyq extra (a user's own import, a real bug)."""
    name = getattr(exc, "name", None) or ""
    if not name:
        return None
    exact = [
        extra
        for extra, modules in EXTRA_MODULES.items()
        if any(name == m or name.startswith(m + ".") for m in modules)
    ]
    # a namespace (google, google.cloud) is missing: any extra under it brings it
    under = [
        extra
        for extra, modules in EXTRA_MODULES.items()
        if any(m.startswith(name + ".") for m in modules)
    ]
    extras = exact or under
    if not extras:
        return None
    return MissingExtra(feature or "this command", extras[0], name)


class BackendError(SteadyqError):
    """A queue or telemetry backend failed while doing its work."""


class BackendUnavailable(BackendError):
    """The backend cannot be opened or reached."""


class LeaseLost(BackendError):
    """The delivery's lease expired and the message was leased again by someone else.

    The caller's outcome was not applied; the message will be (or already was)
    delivered again.
    """


class NotFound(SteadyqError):
    """The requested message, dead letter or execution does not exist."""


class AlreadyRunning(SteadyqError):
    """Another live process already does this (a live watch of the same plan)."""


class ReplayRefused(SteadyqError):
    """A dead letter was replayed too many times already (the loop guard)."""


class PermanentError(SteadyqError):
    """Raise from a handler to dead-letter the message at once, without retries.

    ``reason`` becomes the dead letter's reason code (default ``handler_rejected``);
    the exception text becomes its detail.
    """

    def __init__(self, message: str = "", *, reason: str = "handler_rejected") -> None:
        super().__init__(message)
        self.reason = reason

    def __reduce__(self) -> tuple[object, ...]:
        # keep ``reason`` when the error crosses a process boundary
        return (_rebuild_permanent, (str(self), self.reason))


def _rebuild_permanent(message: str, reason: str) -> PermanentError:
    return PermanentError(message, reason=reason)


__all__ = [
    "BackendError",
    "BackendUnavailable",
    "ConfigError",
    "HandlerLoadError",
    "LeaseLost",
    "MissingExtra",
    "NotFound",
    "PermanentError",
    "ReplayRefused",
    "SteadyqError",
]
