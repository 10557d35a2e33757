"""How long does a lesson take to make, and how many does the content worker finish?

End to end first: the content worker (``steadyq.content:handle``, process runner,
``--concurrency 2``) drains a fresh SQLite queue of N text-only requests, then of
M dual-modality (text + video) requests; requests per minute = requests / (time
the execution finished - time it was ready), so start-up is not counted.

Then two measurements in this process, pinned to one CPU by default:

* text: ``TemplateTextGenerator.generate`` timed with ``time.perf_counter()`` around
  the call only, over N requests with varied topics, interests, grade levels and
  request ids (the requests are built before timing starts).
* video: ``render_video`` of one 6-slide lesson (title card, 4 sections, closing
  card; ~18 s at 640x360, 24 fps) into a temp dir, R times; the median wall time is
  reported, with the CPU time of the same run (CPU ≈ wall means one core was used),
  the file size and the render rate in frames per second of wall time.

Run on demand (not a test):

    python bench/content.py                    # 500 requests, 3 renders, 400 + 24 e2e
    python bench/content.py --requests 2000 --runs 5 --no-pin --e2e-text 1000 --e2e-dual 60

Prints a table, then exactly one line of JSON as the last line of stdout.
Nothing is left on disk unless --keep PATH is given.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from steadyq.content.schema import ContentRequest
from steadyq.content.text import Lesson, TemplateTextGenerator
from steadyq.content.video import render_video
from steadyq.samples import INTERESTS, TOPICS

TARGET_TEXT_P50_MS = 20.0
TARGET_RENDER_S = 2.0
TARGET_BYTES = 3 * 1024 * 1024


def _requests(count: int, seed: int) -> list[ContentRequest]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        picked = tuple(rng.sample(INTERESTS, rng.randint(0, 3)))
        out.append(
            ContentRequest(
                request_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                topic=rng.choice(TOPICS),
                interests=picked or None,
                grade_level=rng.choice([None, *range(1, 13)]),
            )
        )
    return out


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass(frozen=True)
class TextResult:
    count: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float


@dataclass(frozen=True)
class VideoResult:
    wall_s: float  # median
    cpu_s: float
    min_s: float
    max_s: float
    bytes: int
    frames: int
    duration_s: float
    render_fps: float
    codec: str


def bench_text(count: int, seed: int) -> TextResult:
    generator = TemplateTextGenerator()
    requests = _requests(count, seed)
    for req in requests[:20]:  # warm-up: first-call costs are not what we measure
        generator.generate(req)
    timings = []
    for req in requests:
        start = time.perf_counter()
        generator.generate(req)
        timings.append((time.perf_counter() - start) * 1000)
    return TextResult(
        count=count,
        p50_ms=statistics.median(timings),
        p90_ms=_quantile(timings, 0.90),
        p99_ms=_quantile(timings, 0.99),
        max_ms=max(timings),
    )


def six_slide_lesson(seed: int) -> Lesson:
    """A generated lesson with exactly four sections (+ title and closing = 6 slides)."""
    generator = TemplateTextGenerator()
    for req in _requests(500, seed):
        lesson = generator.generate(req)
        if len(lesson.sections) == 4:
            return lesson
    raise RuntimeError("no 4-section lesson among 500 requests")  # pragma: no cover


def bench_video(runs: int, seed: int, keep: Path | None) -> VideoResult:
    lesson = six_slide_lesson(seed)
    walls: list[float] = []
    cpus: list[float] = []
    size = frames = 0
    duration = 0.0
    codec = ""
    folder = Path(tempfile.mkdtemp(prefix="steadyq-bench-"))
    try:
        target = folder / "lesson.mp4"
        for run in range(runs):
            print(f"render {run + 1}/{runs}", file=sys.stderr, flush=True)
            wall0, cpu0 = time.perf_counter(), time.process_time()
            info = render_video(lesson, target)
            walls.append(time.perf_counter() - wall0)
            cpus.append(time.process_time() - cpu0)
            size, frames, duration, codec = info.bytes, info.frames, info.duration_s, info.codec
        if keep is not None:
            shutil.copyfile(target, keep)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    wall = statistics.median(walls)
    return VideoResult(
        wall_s=wall,
        cpu_s=statistics.median(cpus),
        min_s=min(walls),
        max_s=max(walls),
        bytes=size,
        frames=frames,
        duration_s=duration,
        render_fps=frames / wall,
        codec=codec,
    )


@dataclass(frozen=True)
class EndToEnd:
    requests: int
    seconds: float
    per_min: float
    succeeded: int


def bench_end_to_end(count: int, modalities: list[str], seed: int) -> EndToEnd:
    """Drain ``count`` requests through the content worker on a fresh SQLite file."""
    from steadyq.brokers import open_queue, store_for
    from steadyq.publishing import publish_recorded
    from steadyq.worker import Worker, WorkerOptions

    folder = Path(tempfile.mkdtemp(prefix="steadyq-bench-e2e-"))
    try:
        bodies = [
            json.dumps({**r.model_dump(mode="json"), "modalities": modalities}).encode()
            for r in _requests(count, seed)
        ]
        with open_queue(f"sqlite:///{folder}/q.db") as queue:
            store = store_for(queue)
            publish_recorded(queue, store, ((b, {}) for b in bodies))
            print(f"end to end: {count} x {'+'.join(modalities)}", file=sys.stderr, flush=True)
            options = WorkerOptions(
                handler="steadyq.content:handle",
                runner="process",
                concurrency=2,
                drain=True,
                artifacts_dir=str(folder / "artifacts"),
            )
            result = Worker(queue, store, options).run()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    busy = result.finished_at - (result.ready_at or result.started_at)
    return EndToEnd(count, busy, count / busy * 60, result.counts["succeeded"])


def _pin_one_cpu() -> str:
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned (no sched_setaffinity)"
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return f"pinned to CPU {cpu}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Content worker end to end, text p50 and 6-slide video render time.",
    )
    parser.add_argument("--requests", type=int, default=500, help="text requests timed (500)")
    parser.add_argument("--runs", type=int, default=3, help="video renders; median kept (3)")
    parser.add_argument("--seed", type=int, default=1, help="seed for the request mix (1)")
    parser.add_argument(
        "--no-pin", action="store_true", help="do not pin the process to a single CPU"
    )
    parser.add_argument("--keep", type=Path, help="copy the rendered video to this path")
    parser.add_argument(
        "--e2e-text", type=int, default=400, help="text-only requests end to end (400)"
    )
    parser.add_argument(
        "--e2e-dual", type=int, default=24, help="text+video requests end to end (24)"
    )
    args = parser.parse_args(argv)
    if min(args.requests, args.runs, args.e2e_text, args.e2e_dual) < 1:
        parser.error("--requests, --runs, --e2e-text and --e2e-dual must be at least 1")

    # end to end uses both cores, so it runs before this process pins itself to one
    e2e_text = bench_end_to_end(args.e2e_text, ["text"], args.seed)
    e2e_dual = bench_end_to_end(args.e2e_dual, ["text", "video"], args.seed + 1)
    pinning = "not pinned (--no-pin)" if args.no_pin else _pin_one_cpu()
    text = bench_text(args.requests, args.seed)
    vid = bench_video(args.runs, args.seed, args.keep)

    print(f"content generation ({pinning})")
    header = f"{'measure':<34}{'value':>14}  {'target':<15}{'verdict'}"
    print(header)
    print("-" * len(header))
    rows: list[tuple[str, str, str, bool | None]] = [
        ("text p50 (ms)", f"{text.p50_ms:.3f}", f"<= {TARGET_TEXT_P50_MS:g}",
         text.p50_ms <= TARGET_TEXT_P50_MS),
        ("text p90 / p99 / max (ms)",
         f"{text.p90_ms:.3f}/{text.p99_ms:.3f}/{text.max_ms:.2f}", "", None),
        (f"video render, median of {args.runs} (s)", f"{vid.wall_s:.3f}",
         f"<= {TARGET_RENDER_S:g}", vid.wall_s <= TARGET_RENDER_S),
        ("video render min / max (s)", f"{vid.min_s:.3f}/{vid.max_s:.3f}", "", None),
        ("video render CPU time (s)", f"{vid.cpu_s:.3f}", "", None),
        ("video bytes", f"{vid.bytes:,}", f"<= {TARGET_BYTES:,}", vid.bytes <= TARGET_BYTES),
        ("video frames / duration (s)", f"{vid.frames}/{vid.duration_s:.2f}", "", None),
        ("render fps (frames per wall s)", f"{vid.render_fps:.0f}", "", None),
        ("codec", vid.codec, "", None),
        (f"e2e text-only, {e2e_text.requests} req (req/min)", f"{e2e_text.per_min:,.0f}", "",
         e2e_text.succeeded == e2e_text.requests),
        (f"e2e text+video, {e2e_dual.requests} req (req/min)", f"{e2e_dual.per_min:,.1f}", "",
         e2e_dual.succeeded == e2e_dual.requests),
    ]  # fmt: skip
    for name, value, target, ok in rows:
        verdict = "" if ok is None else ("OK" if ok else "MISSED")
        if name.startswith("e2e") and ok is not None:
            verdict = "all succeeded" if ok else "SOME FAILED"
        print(f"{name:<34}{value:>14}  {target:<15}{verdict}".rstrip())
    print(
        json.dumps(
            {
                "text_p50_ms": round(text.p50_ms, 4),
                "video_render_s": round(vid.wall_s, 4),
                "video_bytes": vid.bytes,
                "render_fps": round(vid.render_fps, 1),
                "text_per_min": round(e2e_text.per_min, 1),
                "dual_per_min": round(e2e_dual.per_min, 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
