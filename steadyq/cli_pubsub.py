"""``steadyq pubsub``: set up the Pub/Sub resources a steadyq worker expects."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

from steadyq.brokers.pubsub import DEFAULT_ACK_DEADLINE_S
from steadyq.durations import parse_duration
from steadyq.errors import SteadyqError
from steadyq.exit_codes import code_for, fail, message_of

pubsub_app = typer.Typer(
    help="Google Cloud Pub/Sub: create the topic, subscription and dead-letter queue.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

_out = Console(highlight=False, soft_wrap=True)


@pubsub_app.command("setup")
def pubsub_setup(
    project: Annotated[str, typer.Option(help="Google Cloud project id.")],
    topic: Annotated[str, typer.Option(help="Topic the requests are published to.")],
    subscription: Annotated[str, typer.Option(help="Subscription the workers pull from.")],
    ack_deadline: Annotated[
        int,
        typer.Option(
            help="Ack deadline of the subscription, seconds (10-600). The default, 600, is"
            " the lease the worker takes with its default --deadline, so a pull needs no"
            " extra call to set it."
        ),
    ] = DEFAULT_ACK_DEADLINE_S,
    max_delivery_attempts: Annotated[
        int,
        typer.Option(
            help="Pub/Sub's own dead-letter policy (5-100): a backstop behind steadyq's"
            " --max-attempts for messages whose worker keeps dying."
        ),
    ] = 5,
    min_backoff: Annotated[str, typer.Option(help="Retry policy: shortest redelivery delay.")] = (
        "10s"
    ),
    max_backoff: Annotated[str, typer.Option(help="Retry policy: longest redelivery delay.")] = (
        "600s"
    ),
    dlq_topic: Annotated[
        str | None,
        typer.Option(help="Dead-letter topic (default TOPIC-dlq; its subscription DLQ_TOPIC-sub)."),
    ] = None,
    retention: Annotated[
        str,
        typer.Option(
            help="How long the subscription keeps unacked messages (10m to 7d, Pub/Sub's range)."
        ),
    ] = "7d",
    exactly_once: Annotated[
        bool,
        typer.Option(
            "--exactly-once",
            help="Enable exactly-once delivery: Pub/Sub then refuses an ack whose lease"
            " expired, and steadyq reports it as a lost lease.",
        ),
    ] = False,
) -> None:
    """Create what is missing, idempotently; print what existed and what was created.

    Uses the emulator when PUBSUB_EMULATOR_HOST is set, else Google Cloud with your
    application default credentials. Exit codes: 0 done, 2 bad settings, 3 Pub/Sub
    unreachable or refused.
    """
    try:
        from steadyq.brokers.pubsub import emulator_host, setup

        steps = setup(
            project,
            topic,
            subscription,
            ack_deadline_s=ack_deadline,
            max_delivery_attempts=max_delivery_attempts,
            min_backoff_s=parse_duration(min_backoff),
            max_backoff_s=parse_duration(max_backoff),
            dlq_topic=dlq_topic,
            retention_s=parse_duration(retention),
            exactly_once=exactly_once,
        )
    except (SteadyqError, KeyboardInterrupt) as exc:
        fail(message_of(exc), code_for(exc))
    where = emulator_host()
    _out.print(f"Pub/Sub {'emulator at ' + where if where else 'project ' + project}:")
    for step in steps:
        state = Text("created", style="green") if step.created else Text("exists ", style="dim")
        note = f"  ({step.note})" if step.note else ""
        _out.print(Text("  ") + state + Text(f"  {step.kind:<12} {step.path}{note}"))
        for difference in step.differs:
            _out.print(
                Text("           differs: ", style="yellow")
                + Text(
                    f"{difference} (left as it is; change it with"
                    " `gcloud pubsub subscriptions update`)"
                )
            )
    deadline = steps[-1].ack_deadline_s if steps else None
    if deadline is not None and deadline != DEFAULT_ACK_DEADLINE_S:
        _out.print(
            f"note: the worker leases {DEFAULT_ACK_DEADLINE_S} s with its default --deadline;"
            f" on an ack deadline of {deadline} s every pull makes one more call to set it"
            f" (a worker with --lease {deadline} makes none)"
        )
    _out.print(
        f"worker: steadyq worker --url pubsub://{project}/{subscription}\n"
        f"publish: steadyq publish --url pubsub://{project}/{topic} FILE"
    )
