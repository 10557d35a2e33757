"""Lesson text: the :class:`Lesson` shape, a pluggable generator protocol, a template backend.

A :class:`TextGenerator` turns a :class:`~steadyq.content.schema.ContentRequest` into a
:class:`Lesson`. Anything with ``name``, ``version`` and ``generate(request)`` fits, so a
language-model backend can be dropped in without touching the worker.

:class:`TemplateTextGenerator` is the built-in backend. It needs no network and no
model: it fills phrasing templates with the topic, one of the student's interests
and vocabulary for the student's grade band (1-4, 5-8, 9-12). The same request
always gives the same lesson (the choices are drawn from a ``random.Random`` seeded
from the request), while different requests, topics or interests read differently.

The template backend refuses a small set of topics (instructions for weapons, drugs,
self-harm, explicit material, and topics without a single letter) by raising
:class:`steadyq.PermanentError` with ``reason="topic_refused"``. That is the only
error it raises on purpose.
"""

from __future__ import annotations

import hashlib
import random
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from steadyq.content.schema import ContentRequest
from steadyq.errors import PermanentError

TOPIC_REFUSED = "topic_refused"


# -- the lesson ----------------------------------------------------------------


@dataclass(frozen=True)
class Lesson:
    """One generated lesson: everything a text or video renderer needs."""

    title: str
    hook: str
    sections: list[tuple[str, str]]  # (heading, body), 3-5 of them
    worked_example: str
    questions: list[tuple[str, str]] = field(default_factory=list)  # (question, answer)

    @property
    def markdown(self) -> str:
        """The lesson as a Markdown document."""
        parts = [f"# {self.title}", "", f"> {self.hook}", ""]
        for heading, body in self.sections:
            parts += [f"## {heading}", "", body, ""]
        parts += ["## Worked example", "", self.worked_example, ""]
        if self.questions:
            parts += ["## Check your understanding", ""]
            for number, (question, answer) in enumerate(self.questions, start=1):
                parts += [f"{number}. {question}", f"   - *Answer:* {answer}"]
            parts.append("")
        return "\n".join(parts)


@runtime_checkable
class TextGenerator(Protocol):
    """A lesson-text backend: the template one below, or a language model."""

    @property
    def name(self) -> str:
        """Short backend name, e.g. ``"template"``."""
        ...

    @property
    def version(self) -> str:
        """Backend version: bump it when the output for the same request changes."""
        ...

    def generate(self, request: ContentRequest) -> Lesson:
        """Write the lesson for ``request``; raise PermanentError to refuse it."""
        ...


# -- refusing topics -------------------------------------------------------------
# Deliberately narrow: it targets *how-to* phrasings, so history and science topics
# such as "the atomic bomb" or "drug discovery" still get a lesson.

_REFUSED_PATTERNS = tuple(
    re.compile(pattern)
    for pattern in (
        r"\b(make|making|build|building|assemble|assembling|construct)\s+(an?\s+|your\s+own\s+)?"
        r"(bomb|bombs|explosive|explosives|detonator|molotov|napalm|nerve\s+agent|bioweapon|"
        r"chemical\s+weapon|ghost\s+gun|silencer)\b",
        r"\bpipe\s*bombs?\b",
        r"\b(cook|cooking|make|making|synthesi[sz]e|synthesi[sz]ing|brew)\s+"
        r"(meth|methamphetamine|fentanyl|heroin|crack|cocaine|lsd)\b",
        r"\b(suicide|self\s*harm)\s+(method|methods|technique|techniques|instructions|tips)\b",
        r"\bhow\s+to\s+(kill|hurt|harm|poison|strangle|stab)\s+(yourself|myself|someone|somebody|"
        r"people|a\s+person|my|your|his|her|their)\b",
        r"\b(kill|hurt|harm|cut)\s+(yourself|myself)\b",
        r"\b(porn|porno|pornography|pornographic|sexually\s+explicit|nsfw)\b",
    )
)


def refusal_reason(topic: str) -> str | None:
    """Why the template backend refuses ``topic``, or None when it accepts it."""
    if not any(ch.isalpha() for ch in topic):
        return "the topic has no letters"
    folded = " " + re.sub(r"[^\w]+", " ", topic.casefold()).replace("_", " ") + " "
    for pattern in _REFUSED_PATTERNS:
        if pattern.search(folded):
            return "the topic is on the list of topics this generator will not teach"
    return None


# -- cleaning the inputs ---------------------------------------------------------------


def _clean(text: str) -> str:
    """One line of printable text: control characters dropped, whitespace collapsed."""
    kept = "".join(" " if unicodedata.category(ch).startswith("C") else ch for ch in text)
    return " ".join(kept.split())


def _capitalised(text: str) -> str:
    return text[:1].upper() + text[1:]


_SMALL_WORDS = frozenset(
    {"a", "an", "and", "as", "at", "but", "by", "for", "from", "in", "into", "nor", "of"}
    | {"on", "or", "the", "to", "vs", "via", "with"}
)


def _title_case(text: str) -> str:
    """Headline case that leaves the rest of each word alone (``DNA``, ``iPhone``)."""
    words = text.split(" ")
    out = []
    for index, word in enumerate(words):
        small = word.casefold() in _SMALL_WORDS and 0 < index < len(words) - 1
        out.append(word if small else _capitalised(word))
    return " ".join(out)


def _interests(raw: Sequence[str] | None) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    for item in raw or ():
        cleaned = _clean(item)
        key = cleaned.casefold()
        if cleaned and key not in seen:
            seen.add(key)
            out.append(cleaned)
    return out


def _join_words(items: Sequence[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    if len(items) == 2:
        return f"{items[0]} and {items[1]}"
    return ", ".join(items[:-1]) + f", and {items[-1]}"


# -- grade bands and their vocabulary -----------------------------------------------

_EARLY, _MIDDLE, _HIGH = "early", "middle", "high"


def grade_band(grade_level: int | None) -> str:
    """``"early"`` (grades 1-4), ``"middle"`` (5-8 and unknown) or ``"high"`` (9-12)."""
    if grade_level is None:
        return _MIDDLE
    if grade_level <= 4:
        return _EARLY
    if grade_level <= 8:
        return _MIDDLE
    return _HIGH


_VOCAB: dict[str, dict[str, str]] = {
    _EARLY: {
        "idea": "big idea",
        "parts": "pieces",
        "explain": "explain",
        "notice": "spot",
        "reason": "why",
        "rule": "rule",
        "check": "check",
        "describe": "talk about",
        "predict": "guess",
        "evidence": "clues",
        "useful": "handy",
        "key": "main",
        "tricky": "tricky",
        "think": "think",
        "connect": "link",
        "compare": "compare",
    },
    _MIDDLE: {
        "idea": "key idea",
        "parts": "parts",
        "explain": "explain",
        "notice": "notice",
        "reason": "reason",
        "rule": "rule",
        "check": "check",
        "describe": "describe",
        "predict": "predict",
        "evidence": "evidence",
        "useful": "useful",
        "key": "key",
        "tricky": "tricky",
        "think": "reason",
        "connect": "connect",
        "compare": "compare",
    },
    _HIGH: {
        "idea": "core concept",
        "parts": "components",
        "explain": "explain",
        "notice": "identify",
        "reason": "rationale",
        "rule": "principle",
        "check": "verify",
        "describe": "characterize",
        "predict": "anticipate",
        "evidence": "evidence",
        "useful": "valuable",
        "key": "central",
        "tricky": "difficult",
        "think": "think carefully",
        "connect": "relate",
        "compare": "compare",
    },
}

# How many sentences of a body template each band reads: the early and middle bands
# stop before the last, most abstract sentence; the high band reads the whole paragraph.
_SENTENCES = {_EARLY: 3, _MIDDLE: 3, _HIGH: 4}


# -- the templates ---------------------------------------------------------------------
# Placeholders: {topic}, {Topic} (first letter capitalised), {interest}, {Interest} and
# the vocabulary keys above. Titles are put in headline case after filling.
# Sentences avoid "{topic} is/has": the topic may be singular or plural.

_TITLES = (
    "{topic}: A Closer Look",
    "Getting to Know {topic}",
    "{topic}, Step by Step",
    "Making Sense of {topic}",
    "{topic} Made Clear",
)
_TITLES_BY_BAND = {
    _EARLY: ("Let's Explore {topic}!", "Fun with {topic}"),
    _MIDDLE: ("Unlocking {topic}", "{topic}: What, How and Why"),
    _HIGH: ("Understanding {topic}", "{topic}: Concepts and Applications"),
}
_TITLES_WITH_INTEREST = (
    "{topic}, Seen Through {interest}",
    "From {interest} to {topic}",
)

_HOOKS_WITH_INTEREST = (
    "What do {interest} and {topic} have in common? More than you might expect. "
    "By the end of this lesson you will {notice} {topic} hiding inside {interest}.",
    "If you enjoy {interest}, you already use some of the thinking behind {topic}. "
    "This lesson makes that thinking visible.",
    "Picture yourself in the middle of {interest}. Somewhere in that moment you can find "
    "{topic} quietly at work. Let's look for it.",
    "People who love {interest} know that small details change everything. "
    "The same is true of {topic}, and the details are what we'll look at.",
    "Next time you are busy with {interest}, look twice: {topic} plays a part in the story. "
    "Here is how.",
)
_HOOKS_PLAIN = (
    "Have you ever wondered what makes {topic} tick? This lesson breaks it into small "
    "{parts} you can hold on to.",
    "You can find {topic} in more places than you might expect. Let's see what it means "
    "and why it matters.",
    "Every expert in {topic} started exactly where you are now. Here is the first step.",
    "A few minutes from now, {topic} will feel a lot less mysterious. Let's begin.",
)

_HEADINGS: dict[str, tuple[str, ...]] = {
    "what": ("Meet {topic}", "The {idea} behind {topic}", "{Topic} in a nutshell"),
    "parts": ("The {parts} of {topic}", "Breaking {topic} down", "Inside {topic}"),
    "how": ("{Topic} in action", "{Topic}, one step at a time", "Putting {topic} to work"),
    "why": ("The point of {topic}", "Where you will meet {topic}", "Why learn {topic}?"),
    "mistake": ("A common mix-up", "Watch out for this", "Where people slip up"),
    "connect": (
        "{Topic} and {interest}",
        "Seeing {topic} in {interest}",
        "Where {interest} and {topic} overlap",
    ),
    "connect_plain": ("{Topic} in everyday life", "{Topic} around you", "Bringing {topic} home"),
}

_BODIES: dict[str, tuple[tuple[str, ...], ...]] = {
    "what": (
        (
            "Learning {topic} means learning to see a pattern.",
            "Once you can {notice} it, you will find it in many places.",
            "Calling it {topic} gives us a name for it, so we can {describe} it clearly.",
            "A clear name is the first tool for reasoning about something new.",
        ),
        (
            "Think of {topic} as a tool.",
            "A tool does one job well once you know how to hold it.",
            "The job of {topic} is to help us {describe} what happens and {predict} what "
            "comes next.",
            "Knowing where the tool stops working matters as much as knowing what it can do.",
        ),
        (
            "Every topic starts with a question, and {topic} starts with one too.",
            "The {idea} is the answer to that question.",
            "If you can {explain} that answer in one sentence, you understand the heart of "
            "{topic}.",
            "Everything else in this lesson builds on that one sentence.",
        ),
    ),
    "parts": (
        (
            "Big ideas are easier when you split them up.",
            "You can split {topic} into a few {parts} that fit together.",
            "Learn each one on its own first, then look at how they connect.",
            "Most of the depth in {topic} lives in those connections, not in the {parts} "
            "themselves.",
        ),
        (
            "Try naming the {parts} of {topic} before anything else.",
            "Give each one a short label you will remember.",
            "Then ask how each piece changes when another one changes.",
            "That question turns a list of facts into a working model of {topic}.",
        ),
    ),
    "how": (
        (
            "Start with what you already know.",
            "Then add one new step at a time and {check} that it makes sense.",
            "When a step feels {tricky}, go back one step and try again more slowly.",
            "This habit of small, checked steps is how specialists in {topic} work too.",
        ),
        (
            "Working with {topic} follows an order.",
            "First look closely, then decide what matters, then act on it.",
            "At each stage, look at the {evidence} before moving on.",
            "Skipping a stage is the quickest way to a confident but wrong answer.",
        ),
        (
            "Watch {topic} in action, slowly.",
            "Say out loud what happens first, next and last.",
            "Saying each step forces you to {think} about why it comes in that order.",
            "If you cannot {explain} a step, that is exactly where to look again.",
        ),
    ),
    "why": (
        (
            "Knowing {topic} is {useful} far beyond the classroom.",
            "It helps you {predict} what will happen and {explain} why.",
            "People in many jobs rely on it every day, often without naming it.",
            "Learning it well also trains a way of thinking you can reuse in other subjects.",
        ),
        (
            "You will meet {topic} again, in school and outside it.",
            "Each time, it will be a little easier to {notice}.",
            "That is how understanding grows: the same {idea}, seen in new places.",
            "The goal is to carry {topic} with you, not to memorize it for one test.",
        ),
    ),
    "mistake": (
        (
            "A lot of people rush {topic}.",
            "They remember a {rule} but forget the {reason} behind it.",
            "Without the {reason}, the {rule} breaks as soon as the problem looks different.",
            "So whenever you use a {rule}, ask yourself why it works here.",
        ),
        (
            "It is easy to mix up {topic} with something that only looks similar.",
            "Before you answer, {check} that the situation really is about {topic}.",
            "Look for the {key} feature that makes {topic} what it is.",
            "If that feature is missing, a different {idea} is probably at work.",
        ),
    ),
    "connect": (
        (
            "Think about {interest}.",
            "Somewhere in it there is a moment that follows the same pattern as {topic}.",
            "Finding that moment is a great way to {connect} new learning to something you "
            "already care about.",
            "Ask what would change in {interest} if {topic} worked differently.",
        ),
        (
            "There are lots of small decisions in {interest}.",
            "Many of them use the same {idea} as {topic}, even if nobody calls it that.",
            "Next time you are busy with {interest}, try to {notice} one.",
            "Explaining that link to someone else is a strong test of your understanding.",
        ),
    ),
    "connect_plain": (
        (
            "Look around your home or school.",
            "Can you {notice} {topic} at work anywhere?",
            "Everyday examples make a new {idea} stick.",
            "Collect two or three of them and {compare} how they are alike.",
        ),
        (
            "You will not find {topic} only in school.",
            "It appears in games, stories, kitchens and streets.",
            "Finding it there helps you {connect} it to what you already know.",
            "The more places you find it, the more flexible your understanding becomes.",
        ),
    ),
}
_OPTIONAL_KINDS = ("parts", "how", "why", "mistake", "connect")

_EXAMPLES = (
    "Imagine explaining {topic} to a friend who loves {interest}.\n\n"
    "1. **Name the {idea}.** Sum up {topic} in one sentence.\n"
    "2. **Find it in {interest}.** Pick one moment where the same pattern shows up.\n"
    "3. **Test it.** Ask what would change in that moment if the pattern were different.\n"
    "4. **Wrap up.** Put the three answers together into a short explanation.\n\n"
    "Working through these steps turns a fact you heard into something you can {explain}.",
    "Here is a worked example that uses {interest}.\n\n"
    "1. **Look.** Describe one scene from {interest} in plain words.\n"
    "2. **Spot the {parts}.** Circle the {parts} of the scene that belong to {topic}.\n"
    "3. **Reason.** For each one, say why it matters and what it causes.\n"
    "4. **Check.** Read your answer back and {check} that every step follows from the last.\n\n"
    "The result: {topic}, explained with something you already know well.",
    "Let's work one through together, with {interest} as the setting.\n\n"
    "1. **Question.** What part of {interest} depends on {topic}?\n"
    "2. **Make a guess.** Before looking closer, {predict} what the answer might be.\n"
    "3. **Gather {evidence}.** Watch or recall what actually happens.\n"
    "4. **Compare.** Was your guess right? If not, what did you miss?\n\n"
    "Even a wrong first guess teaches you something about {topic}.",
)

_EXAMPLES_PLAIN = (
    "Imagine a friend asks you about {topic} and you have one minute.\n\n"
    "1. **Name the {idea}.** Sum up {topic} in one sentence.\n"
    "2. **Give an everyday example.** Pick something from home or school where it shows up.\n"
    "3. **Explain the link.** Say which part of your example matches which part of {topic}.\n"
    "4. **Check.** Ask your friend to repeat it back, and {check} that nothing got lost.\n\n"
    "If you can do this in a minute, you really know {topic}.",
    "Let's work one through together.\n\n"
    "1. **Question.** Where might {topic} matter on an ordinary day?\n"
    "2. **Make a guess.** Before looking closer, {predict} what the answer might be.\n"
    "3. **Gather {evidence}.** Think back to what actually happens on such a day.\n"
    "4. **Compare.** Was your guess right? If not, what did you miss?\n\n"
    "Even a wrong first guess teaches you something about {topic}.",
)

_QUESTIONS: tuple[tuple[str, str], ...] = (
    (
        "In your own words, what is the {idea} of {topic}?",
        "A good answer names the {idea} of {topic} in one sentence and says what it helps us "
        "{describe} or {predict}.",
    ),
    (
        "What is a common mistake people make with {topic}, and how can you avoid it?",
        "Rushing: remembering a {rule} without its {reason}. Slow down and {check} each step.",
    ),
    (
        "Why is it {useful} to know about {topic}?",
        "It helps you {predict} what will happen and {explain} why, in school and outside it.",
    ),
    (
        "What should you do first when you meet a new problem about {topic}?",
        "Start from what you already know, then add one step at a time and {check} it.",
    ),
    (
        "How would you {explain} {topic} to a younger student?",
        "Use one simple example, show one step at a time, and let them try a step themselves.",
    ),
)
_QUESTIONS_WITH_INTEREST: tuple[tuple[str, str], ...] = (
    (
        "Where could you {notice} {topic} in {interest}?",
        "Pick one specific moment in {interest} and point to the part that follows the same "
        "pattern as {topic}.",
    ),
    (
        "What would change in {interest} if {topic} worked differently?",
        "Any answer that traces the change step by step is a good one: it shows you "
        "understand the {reason} behind {topic}.",
    ),
)


class _Filler:
    """Fills templates with the request's words; every choice goes through one rng."""

    def __init__(self, rng: random.Random, words: dict[str, str], band: str) -> None:
        self.rng = rng
        self.words = words
        self.band = band

    def fill(self, template: str) -> str:
        return _capitalised(template.format_map(self.words))

    def pick(self, templates: Sequence[str]) -> str:
        return self.fill(self.rng.choice(templates))

    def paragraph(self, kind: str) -> str:
        sentences = self.rng.choice(_BODIES[kind])[: _SENTENCES[self.band]]
        return " ".join(self.fill(sentence) for sentence in sentences)


def _seed(request: ContentRequest) -> int:
    """A seed from the whole request (request_id first): same request, same lesson."""
    key = "\x1f".join(
        (
            request.request_id,
            request.topic,
            "\x1e".join(request.interests or ()),
            str(request.grade_level),
        )
    )
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big")


class TemplateTextGenerator:
    """The built-in, offline lesson writer: phrasing templates filled per request."""

    name = "template"
    version = "1"

    def generate(self, request: ContentRequest) -> Lesson:
        """A lesson for ``request``; PermanentError(reason="topic_refused") if refused."""
        topic = _clean(request.topic)
        why_not = refusal_reason(topic)
        if why_not is not None:
            raise PermanentError(f"refused topic {topic[:80]!r}: {why_not}", reason=TOPIC_REFUSED)

        rng = random.Random(_seed(request))
        band = grade_band(request.grade_level)
        interests = _interests(request.interests)
        interest = rng.choice(interests) if interests else ""
        words = dict(_VOCAB[band])
        words.update(
            topic=topic,
            Topic=_capitalised(topic),
            interest=interest,
            Interest=_capitalised(interest),
        )
        filler = _Filler(rng, words, band)

        titles = list(_TITLES) + list(_TITLES_BY_BAND[band])
        if interest:
            titles += list(_TITLES_WITH_INTEREST)
        title = _title_case(filler.pick(titles))
        hook = filler.pick(_HOOKS_WITH_INTEREST if interest else _HOOKS_PLAIN)

        count = rng.randint(3, 5)
        optional = rng.sample(_OPTIONAL_KINDS, count - 1)
        kinds = ["what"] + [kind for kind in _OPTIONAL_KINDS if kind in optional]
        sections: list[tuple[str, str]] = []
        for kind in kinds:
            body_kind = kind if interest or kind != "connect" else "connect_plain"
            heading = filler.pick(_HEADINGS[body_kind])
            sections.append((heading, filler.paragraph(body_kind)))

        worked_example = filler.pick(_EXAMPLES if interest else _EXAMPLES_PLAIN)
        others = [other for other in interests if other != interest][:4]
        if others:  # the other interests get a mention too
            worked_example += f" You could try the same steps with {_join_words(others)}."

        pool = list(_QUESTIONS)
        if interest:
            pool += list(_QUESTIONS_WITH_INTEREST)
            must = rng.choice(_QUESTIONS_WITH_INTEREST)
            rest = rng.sample([q for q in pool if q != must], 2)
            chosen = [must, *rest]
            rng.shuffle(chosen)
        else:
            chosen = rng.sample(pool, 3)
        questions = [(filler.fill(q), filler.fill(a)) for q, a in chosen]

        return Lesson(
            title=title,
            hook=hook,
            sections=sections,
            worked_example=worked_example,
            questions=questions,
        )


__all__ = [
    "TOPIC_REFUSED",
    "Lesson",
    "TemplateTextGenerator",
    "TextGenerator",
    "grade_band",
    "refusal_reason",
]
