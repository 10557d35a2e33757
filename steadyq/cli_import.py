"""``steadyq import gcloud FILES``: what ``gcloud … --format=json`` printed, into a store."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from steadyq._terminal import safe
from steadyq.errors import SteadyqError
from steadyq.exit_codes import ExitCode, code_for, fail, message_of

import_app = typer.Typer(
    help="Import a platform's telemetry into a steadyq store, for the watch to judge.",
    no_args_is_help=True,
)

RejectionOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--rejection-pattern",
        help="Regex (repeatable): a log line it matches is a rejected message. Named"
        " groups request_id, reason and message_id are used when present.",
        show_default=False,
    ),
]


class _Counted:
    """A text file that tells a progress bar how far it has been read."""

    def __init__(self, path: Path, advance: Callable[[int], None]) -> None:
        self._file = path.open(encoding="utf-8", errors="replace")
        self._advance = advance

    def read(self, size: int = -1) -> str:
        text = self._file.read(size)
        self._advance(len(text))
        return text

    def close(self) -> None:
        self._file.close()


@import_app.command("gcloud")
def import_gcloud(
    files: Annotated[
        list[Path],
        typer.Argument(
            help="gcloud JSON exports: `run jobs executions list`, `logging read`,"
            " `pubsub subscriptions describe` (any order; JSON arrays or JSON lines).",
            show_default=False,
        ),
    ],
    url: Annotated[
        str,
        typer.Option("--url", envvar="STEADYQ_URL", help="The SQLite store to import into."),
    ] = "sqlite:///steadyq.db",
    rejection_pattern: RejectionOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the counts as JSON.")] = False,
) -> None:
    """Import Cloud Run executions, Cloud Logging entries and a subscription.

    Idempotent: entries are deduplicated on their insertId, executions on their
    name, and a later state of an execution replaces the earlier one, so the same
    or overlapping files can be imported again. Exit codes: 0 imported, 2 a file is
    unreadable or not JSON, 3 the store is unusable.
    """
    from steadyq.brokers import open_store
    from steadyq.errors import ConfigError
    from steadyq.watch.sources.gcloud import EntryConverter, ImportCounts, Importer

    err = Console(stderr=True, highlight=False, soft_wrap=True)

    for path in files:
        if not path.is_file():
            fail(f"no such file: {path}", ExitCode.USAGE)
    try:
        converter = EntryConverter.compile(rejection_pattern or ())
        opened = open_store(url)
    except SteadyqError as exc:
        fail(str(exc), code_for(exc))
        return
    try:
        store = opened.sqlite_store("steadyq import")
    except ConfigError as exc:
        opened.close()
        fail(str(exc), 2)
        return
    total = ImportCounts()
    per_file: dict[str, dict[str, int]] = {}
    try:
        importer = Importer(store, converter)
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TimeElapsedColumn(),
            console=err,
            transient=True,
            disable=json_out or not err.is_terminal,
        ) as progress:
            for path in files:
                task = progress.add_task(safe(path.name, 40).plain, total=path.stat().st_size)

                def advance(n: int, task: TaskID = task) -> None:
                    progress.advance(task, n)

                stream = _Counted(path, advance)
                try:
                    counts = importer.stream(stream, derive=False)
                finally:
                    stream.close()
                per_file[str(path)] = counts.to_dict()
                total.merge(counts)
            # gcloud prints newest first: the views are derived once, for every file
            task = progress.add_task("deriving executions and ledger", total=None)
            importer.finish()
            progress.remove_task(task)
    except ConfigError as exc:
        fail(f"{path}: {exc}", code_for(exc))
    except (SteadyqError, OSError, KeyboardInterrupt) as exc:
        # interrupted: what was imported stays, and importing again skips it
        fail(message_of(exc), code_for(exc))
    finally:
        store.close()
    if json_out:
        doc = {"url": url, "total": total.to_dict(), "files": per_file}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return
    out = Console(highlight=False, soft_wrap=True)
    t = total
    out.print(
        f"executions: {t.executions_new} new, {t.executions_updated} updated,"
        f" {t.executions_unchanged} unchanged"
        + (f", {t.executions_not_started} not started yet" if t.executions_not_started else "")
    )
    out.print(
        f"log entries: {t.entries_new} new, {t.entries_duplicate} already imported;"
        f" of the new: {t.steadyq_events} steadyq events, {t.rejections} rejections,"
        f" {t.entries_new - t.entries_not_stored - t.steadyq_events - t.rejections}"
        f" warnings and errors, {t.entries_not_stored} below WARNING (not stored)"
    )
    if t.subscriptions:
        out.print(
            f"subscriptions: {t.subscriptions} (no backlog figures in a subscription:"
            " the live source reads them from Cloud Monitoring)"
        )
    if t.skipped:
        out.print(f"skipped: {t.skipped} items that are none of the three kinds")
    out.print(Text("into ") + safe(url, None))
