"""Sample traffic: valid content requests and the poison messages of the incident."""

from __future__ import annotations

import json
import random
import uuid

TOPICS = (
    "fractions",
    "photosynthesis",
    "the water cycle",
    "plate tectonics",
    "the French Revolution",
    "linear equations",
    "probability",
    "the solar system",
    "cell division",
    "poetry meter",
)
INTERESTS = ("basketball", "music", "minecraft", "cooking", "space", "dinosaurs", "art", "soccer")

# request ids the incident's smoke tests actually sent: none is a UUID
INCIDENT_POISON_IDS = (
    "test-smoke-001",
    "invalid-uuid-test-1762216900",
    "test2_text_only",
)


def valid_request(rng: random.Random, *, modalities: list[str] | None = None) -> dict[str, object]:
    """One valid content request, deterministic for a given ``rng`` state."""
    request: dict[str, object] = {
        "request_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "topic": rng.choice(TOPICS),
        "student_id": f"student-{rng.randrange(1000):03d}",
        "interests": rng.sample(INTERESTS, 2),
        "grade_level": rng.randint(3, 10),
    }
    if modalities is not None:
        request["modalities"] = modalities
    return request


def poison_messages(rng: random.Random) -> list[bytes]:
    """One message for each way a body can be unprocessable, incident ids first."""
    topic = {"topic": "fractions"}
    bodies = [json.dumps({"request_id": rid, **topic}).encode() for rid in INCIDENT_POISON_IDS]
    good_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    bodies += [
        b"\xff\xfe not utf-8",
        b"request_id=123;topic=fractions",
        b'["a", "list"]',
        json.dumps(topic).encode(),
        json.dumps({"request_id": "{" + good_id + "}", **topic}).encode(),
        json.dumps({"request_id": good_id, "topic": "", "grade_level": 99}).encode(),
    ]
    return bodies


def sample_mix(valid: int = 20, *, seed: int = 7) -> list[bytes]:
    """``valid`` valid requests in the three tested shapes, plus every poison kind, shuffled."""
    rng = random.Random(seed)
    shapes: list[list[str] | None] = [None, ["text"], ["video"], ["text", "video"]]
    bodies = [
        json.dumps(valid_request(rng, modalities=shapes[i % len(shapes)])).encode()
        for i in range(valid)
    ]
    bodies += poison_messages(rng)
    rng.shuffle(bodies)
    return bodies
