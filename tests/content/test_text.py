"""The template lesson writer: deterministic, varied, complete, and it refuses what it must."""

from __future__ import annotations

import re
import statistics
import time
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from steadyq.content.schema import ContentRequest
from steadyq.content.text import (
    Lesson,
    TemplateTextGenerator,
    TextGenerator,
    grade_band,
    refusal_reason,
)
from steadyq.errors import PermanentError

generator = TemplateTextGenerator()


def rid(n: int) -> str:
    return str(uuid.UUID(int=n))


def request(
    n: int = 1,
    topic: str = "fractions",
    interests: tuple[str, ...] | None = ("soccer",),
    grade_level: int | None = 5,
) -> ContentRequest:
    return ContentRequest(
        request_id=rid(n), topic=topic, interests=interests, grade_level=grade_level
    )


def test_satisfies_the_protocol() -> None:
    assert isinstance(generator, TextGenerator)
    assert generator.name == "template"
    assert generator.version


def test_same_request_same_lesson() -> None:
    first = generator.generate(request(7))
    again = TemplateTextGenerator().generate(request(7))
    assert first == again
    assert first.markdown == again.markdown


def test_lessons_vary_across_request_ids() -> None:
    texts = {generator.generate(request(n)).markdown for n in range(20)}
    assert len(texts) >= 15


def test_lessons_differ_across_topics_and_interests() -> None:
    base = generator.generate(request(1)).markdown
    other_topic = generator.generate(request(1, topic="photosynthesis")).markdown
    other_interest = generator.generate(request(1, interests=("chess",))).markdown
    assert len({base, other_topic, other_interest}) == 3
    assert "photosynthesis" in other_topic.lower() and "fractions" not in other_topic
    assert "chess" in other_interest and "soccer" not in other_interest


def test_phrasing_varies_not_just_the_nouns() -> None:
    # the same topic and interest under different ids: titles and hooks change
    lessons = [generator.generate(request(n)) for n in range(40)]
    assert len({lesson.title for lesson in lessons}) >= 5
    assert len({lesson.hook for lesson in lessons}) >= 4
    assert len({tuple(h for h, _ in lesson.sections) for lesson in lessons}) >= 10


def test_lesson_is_complete() -> None:
    lesson = generator.generate(request(3, topic="the water cycle", interests=("drawing",)))
    assert "Water Cycle" in lesson.title
    assert "drawing" in lesson.hook and "water cycle" in lesson.hook
    assert 3 <= len(lesson.sections) <= 5
    assert all(heading and body for heading, body in lesson.sections)
    assert lesson.worked_example
    assert len(lesson.questions) == 3
    assert all(q.endswith("?") and len(a) > 10 for q, a in lesson.questions)
    assert len({q for q, _ in lesson.questions}) == 3


def test_markdown_structure() -> None:
    lesson = generator.generate(request(4, interests=("soccer", "music", "space")))
    md = lesson.markdown
    lines = md.splitlines()
    assert lines[0] == f"# {lesson.title}"
    assert [line for line in lines if line.startswith("# ")] == [lines[0]]
    headings = [line[3:] for line in lines if line.startswith("## ")]
    assert headings[: len(lesson.sections)] == [h for h, _ in lesson.sections]
    assert headings[-2:] == ["Worked example", "Check your understanding"]
    assert f"> {lesson.hook}" in lines
    quiz = lines[lines.index("## Check your understanding") :]
    questions = [line for line in quiz if re.match(r"^\d\. ", line)]
    answers = [line for line in quiz if line.startswith("   - *Answer:* ")]
    assert len(questions) == 3 and len(answers) == 3
    for interest in ("soccer", "music", "space"):
        assert interest in md  # one in the hook, the others named in the lesson


def test_no_interests_still_reads_well() -> None:
    lesson = generator.generate(request(5, interests=None))
    assert "{" not in lesson.markdown and "}" not in lesson.markdown
    assert len(lesson.questions) == 3


@pytest.mark.parametrize(
    ("grade", "band", "word"),
    [(2, "early", "big idea"), (6, "middle", "key idea"), (11, "high", "core concept")],
)
def test_vocabulary_follows_the_grade_band(grade: int, band: str, word: str) -> None:
    assert grade_band(grade) == band
    found = [word in generator.generate(request(n, grade_level=grade)).markdown for n in range(10)]
    assert any(found)


def test_older_students_get_longer_sections() -> None:
    def words(grade: int) -> float:
        lessons = [generator.generate(request(n, grade_level=grade)) for n in range(30)]
        return statistics.mean(len(b.split()) for lesson in lessons for _, b in lesson.sections)

    assert words(11) > words(2)


def test_user_text_is_flattened_and_not_a_template() -> None:
    lesson = generator.generate(
        request(6, topic="  {Topic}\nvolcanoes\x00 ", interests=("lego\n# heading",))
    )
    md = lesson.markdown
    assert "{Topic} volcanoes" in md
    assert "\x00" not in md
    assert "\n# heading" not in md


@pytest.mark.parametrize(
    "topic",
    ["how to make a bomb", "Pipe-Bomb basics", "cook meth", "suicide methods", "12345", "?!", "🙂"],
)
def test_refused_topics_raise_permanent_error(topic: str) -> None:
    with pytest.raises(PermanentError) as caught:
        generator.generate(request(8, topic=topic))
    assert caught.value.reason == "topic_refused"
    assert refusal_reason(topic) is not None


@pytest.mark.parametrize(
    "topic", ["the atomic bomb", "history of drug discovery", "C4 photosynthesis", "π", "Ω law"]
)
def test_nearby_school_topics_are_accepted(topic: str) -> None:
    assert refusal_reason(topic) is None
    assert isinstance(generator.generate(request(9, topic=topic)), Lesson)


@settings(max_examples=200, deadline=None)
@given(
    topic=st.text(min_size=1, max_size=200),
    interests=st.none() | st.lists(st.text(min_size=1, max_size=60), max_size=5).map(tuple),
    grade=st.none() | st.integers(1, 12),
    n=st.integers(0, 2**64),
)
def test_any_valid_request_gives_a_lesson_or_a_refusal(
    topic: str, interests: tuple[str, ...] | None, grade: int | None, n: int
) -> None:
    req = request(n, topic=topic, interests=interests, grade_level=grade)
    try:
        lesson = generator.generate(req)
    except PermanentError as exc:
        assert exc.reason == "topic_refused"
        return
    assert lesson.title and len(lesson.questions) == 3
    assert 3 <= len(lesson.sections) <= 5


def test_generation_is_fast() -> None:
    requests = [request(n, grade_level=n % 12 + 1) for n in range(200)]
    timings = []
    for req in requests:
        start = time.perf_counter()
        generator.generate(req)
        timings.append(time.perf_counter() - start)
    assert statistics.median(timings) < 0.020
