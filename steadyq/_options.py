"""Command-line options that several commands share (``steadyq`` and ``steadyq watch``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar="STEADYQ_URL",
        help="Queue and store URL (default sqlite:///steadyq.db in this folder).",
        show_default=False,
    ),
]
StoreOpt = Annotated[
    str | None,
    typer.Option(
        "--store",
        envvar="STEADYQ_STORE",
        help="Telemetry store URL for a queue without its own, e.g. pubsub:// "
        "(default sqlite:///steadyq.db).",
        show_default=False,
    ),
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", help="Settings file (default ./steadyq.toml when present)."),
]
