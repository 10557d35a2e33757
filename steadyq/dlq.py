"""Dead-letter queue tools shared by the CLI and library users."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from steadyq._files import write_atomic
from steadyq.brokers.base import DeadLetter
from steadyq.durations import rfc3339

#: The replay loop guard: a letter replayed this often is refused unless overridden.
MAX_REPLAYS = 3


def preview(payload: bytes, limit: int = 200) -> str:
    """A printable, escaped prefix of a payload."""
    text = payload[: limit * 4].decode("utf-8", errors="backslashreplace")
    text = "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text
    )
    return text if len(text) <= limit else text[: limit - 1] + "…"


def stats(letters: Iterable[DeadLetter]) -> list[dict[str, Any]]:
    """Counts by reason, biggest first, with the oldest and newest time of each."""
    groups: dict[str, list[float]] = {}
    for letter in letters:
        groups.setdefault(letter.reason, []).append(letter.dead_lettered_at)
    return [
        {
            "reason": reason,
            "count": len(times),
            "oldest": rfc3339(min(times)),
            "newest": rfc3339(max(times)),
        }
        for reason, times in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    ]


def replay_rows(
    done: Sequence[tuple[DeadLetter, str | None]], *, dry_run: bool, max_replays: int
) -> list[dict[str, Any]]:
    """One row per letter a replay looked at: replayed, would replay, or refused."""
    rows = []
    for letter, new_id in done:
        if letter.replays >= max_replays:
            outcome = "refused"
        elif dry_run:
            outcome = "would replay"
        else:
            outcome = "replayed"
        rows.append(
            {
                "message_id": letter.message_id,
                "reason": letter.reason,
                "replays": letter.replays,
                "outcome": outcome,
                "new_message_id": new_id,
            }
        )
    return rows


def replay_summary(
    rows: Sequence[dict[str, Any]], *, dry_run: bool, max_replays: int = MAX_REPLAYS
) -> str:
    refused = sum(r["outcome"] == "refused" for r in rows)
    moved = len(rows) - refused
    verb = "would replay" if dry_run else "replayed"
    text = f"{verb} {moved} dead letters"
    if refused:
        text += (
            f"; refused {refused} already replayed {max_replays}+ times"
            " (raise --max-replays to override the loop guard)"
        )
    return text


def export_jsonl(letters: Iterable[DeadLetter], path: Path) -> None:
    """Write letters as JSON lines, atomically."""
    lines = "".join(json.dumps(letter.to_dict(), ensure_ascii=True) + "\n" for letter in letters)
    write_atomic(Path(path), lines.encode("ascii"))
