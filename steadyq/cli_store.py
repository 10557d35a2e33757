"""``steadyq store``: keep the telemetry store (and the dead-letter queue) bounded.

``steadyq store prune --older-than 30d [--dlq-older-than 7d] [--dry-run]`` drops the
events, finished ledger rows, finished executions and lapsed claims older than the
cut (:meth:`~steadyq.telemetry.store.EventStore.prune`) and, when asked, the dead
letters older than theirs (:meth:`~steadyq.brokers.base.Queue.dlq_expire`; workers
expire dead letters by themselves after 7 days by default). docs/store.md.
"""

from __future__ import annotations

import json
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from steadyq._options import ConfigOpt, StoreOpt, UrlOpt
from steadyq.errors import ConfigError
from steadyq.exit_codes import exits_on_error

store_app = typer.Typer(
    help="The telemetry store: retention (prune old events and finished ledger rows).",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@store_app.command("prune")
def prune_command(
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than",
            help="Drop telemetry older than this (30d, 12h): events, completed and failed"
            " ledger rows, finished executions, lapsed claims.",
            show_default=False,
        ),
    ],
    dlq_older_than: Annotated[
        str | None,
        typer.Option(
            "--dlq-older-than",
            help="Also expire dead letters older than this (7d); 0 keeps them."
            " Default: dead letters are left alone (workers expire them after 7 days).",
            show_default=False,
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be dropped; drop nothing.")
    ] = False,
    url: UrlOpt = None,
    config: ConfigOpt = None,
    store_url: StoreOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the counts as JSON.")] = False,
) -> None:
    """Drop old telemetry for good, in short transactions that workers can run beside.

    A pruned completed ledger row no longer marks a later copy of its request as a
    duplicate: keep rows longer than a copy can reach a worker. Exit codes: 0 done
    (or counted), 2 bad arguments or a store that cannot prune, 3 the store or the
    queue is unavailable, 1 another failure.
    """
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    with exits_on_error():
        doc = _prune(older_than, dlq_older_than, dry_run, url, config, store_url, err)
    if json_out:
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return
    out = Console(highlight=False, soft_wrap=True)
    verb = "would drop" if dry_run else "dropped"
    counts = doc["telemetry"]
    out.print(
        f"{verb} (older than {older_than}): {counts['events']:,} events,"
        f" {counts['requests']:,} finished ledger rows, {counts['executions']:,} finished"
        f" executions, {counts['claims']:,} lapsed claims"
    )
    if doc["dead_letters"] is not None:
        out.print(f"{verb} {doc['dead_letters']:,} dead letters (older than {dlq_older_than})")
    elif doc["dlq_note"]:
        out.print(Text(doc["dlq_note"]))


def _prune(
    older_than: str,
    dlq_older_than: str | None,
    dry_run: bool,
    url: str | None,
    config: Path | None,
    store_url: str | None,
    err: Console,
) -> dict[str, Any]:
    import time

    from steadyq.brokers import open_queue, store_for
    from steadyq.brokers.base import DlqFilter, dlq_cut, expires_dead_letters
    from steadyq.config import load_settings
    from steadyq.durations import parse_duration

    age = parse_duration(older_than)
    if age <= 0:
        raise ConfigError("--older-than must be more than 0 (e.g. 30d)")
    dlq_age = None if dlq_older_than is None else parse_duration(dlq_older_than)
    settings = load_settings(config, overrides={"url": url, "store": store_url})
    now = time.time()
    # a dry run only looks: it neither creates a database nor needs to write one
    with open_queue(settings.url, read_only=dry_run) as queue:
        store = store_for(queue, settings.store, read_only=dry_run)
        busy = err.status("pruning the store…") if err.is_terminal else nullcontext()
        with busy:
            counts = store.prune(age, now=now, dry_run=dry_run)
        letters: int | None = None
        note = None
        if dlq_age is not None:
            if not expires_dead_letters(queue):
                note = (
                    f"dead letters: a {queue.scheme}:// queue expires them by its own"
                    " retention; none deleted"
                )
            elif dry_run:
                cut = dlq_cut(dlq_age, now)
                letters = 0 if cut is None else len(queue.dlq_list(DlqFilter(before=cut)))
            else:
                letters = queue.dlq_expire(dlq_age, now)
    return {
        "dry_run": dry_run,
        "older_than_s": age,
        "telemetry": counts.to_dict(),
        "dlq_older_than_s": dlq_age,
        "dead_letters": letters,
        "dlq_note": note,
    }
