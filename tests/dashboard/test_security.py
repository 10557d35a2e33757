"""Who gets in, and which requests may change something."""

from __future__ import annotations

import re
from typing import Any

import pytest
from typer.testing import CliRunner

from steadyq.cli import app
from steadyq.dashboard.security import CSP, is_loopback
from steadyq.dashboard.serve import check_bind
from steadyq.errors import ConfigError
from tests.dashboard.conftest import TOKEN, body, client_for, drain

PAGES = ("/", "/dlq", "/requests?id=x", "/watches", "/metrics", "/dlq/confirm?action=replay")


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "::", "example.org"])
def test_a_non_loopback_bind_without_a_token_refuses_to_start(
    host: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STEADYQ_DASHBOARD_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="without a token"):
        check_bind(host, None)
    check_bind(host, TOKEN)  # with one it may


def test_the_command_says_why_it_refuses_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("STEADYQ_DASHBOARD_TOKEN", raising=False)
    result = CliRunner().invoke(app, ["dashboard", "--host", "0.0.0.0", "--port", "0"])
    assert result.exit_code == 2
    assert "without a token" in result.output
    assert "Traceback" not in result.output


def test_loopback_addresses() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.9.9.9", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.1", "example.org"))


@pytest.mark.parametrize("path", PAGES)
def test_without_the_token_every_route_answers_401(view: Any, path: str) -> None:
    client = client_for(view, TOKEN)
    assert client.get(path).status_code == 401
    wrong = client.get(path, headers={"Authorization": "Bearer " + TOKEN[:-1] + "X"})
    assert wrong.status_code == 401
    assert wrong.headers["www-authenticate"].startswith("Bearer")
    assert client.get(path + ("&" if "?" in path else "?") + "token=nope").status_code == 401
    right = client.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
    assert right.status_code in (200, 400)  # a bad query may still be refused, after auth


def test_healthz_needs_no_token(view: Any) -> None:
    assert client_for(view, TOKEN).get("/healthz").text == "ok\n"


def test_a_token_in_the_url_becomes_an_httponly_samesite_cookie(view: Any) -> None:
    client = client_for(view, TOKEN)
    first = client.get(f"/dlq?reason=x&token={TOKEN}")
    assert first.status_code == 303
    assert first.headers["location"] == "/dlq?reason=x"  # the token leaves the address bar
    cookie = first.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert client.get("/dlq?reason=x").status_code == 200  # the client kept the cookie


def test_a_tokenless_dashboard_answers_only_to_loopback_host_names(view: Any) -> None:
    client = client_for(view)
    assert client.get("/").status_code == 200
    # a DNS-rebinding page reaches 127.0.0.1 under its own name
    assert client.get("/", headers={"Host": "evil.example"}).status_code == 403


def _letter(view: Any) -> str:
    view.queue.publish(body(request_id="not-a-uuid"))
    drain(view.queue)
    (letter,) = view.queue.dlq_list()
    return str(letter.message_id)


def test_a_cross_origin_post_is_refused(view: Any) -> None:
    mid = _letter(view)
    client = client_for(view, TOKEN)
    form = {"id": mid, "expected": "1"}
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for headers in (
        {**auth, "Origin": "http://evil.example"},
        {**auth, "Origin": "null"},
        {**auth, "Sec-Fetch-Site": "cross-site"},
    ):
        assert client.post("/dlq/purge", data=form, headers=headers).status_code == 403
    client.cookies.set("steadyq_token", TOKEN)
    # a cookie alone, with neither Origin nor Sec-Fetch-Site, is not enough
    assert client.post("/dlq/purge", data=form).status_code == 403
    assert view.queue.stats().dead_lettered == 1
    same = client.post("/dlq/purge", data=form, headers={"Origin": "http://127.0.0.1:8765"})
    assert same.status_code == 200
    assert view.queue.stats().dead_lettered == 0


def test_a_post_without_a_token_is_refused(view: Any) -> None:
    mid = _letter(view)
    client = client_for(view, TOKEN)
    response = client.post(
        "/dlq/replay",
        data={"id": mid, "expected": "1"},
        headers={"Origin": "http://127.0.0.1:8765"},
    )
    assert response.status_code == 401
    assert view.queue.stats().dead_lettered == 1


def test_a_get_cannot_replay(view: Any) -> None:
    _letter(view)
    client = client_for(view)
    assert client.get("/dlq/replay").status_code == 405
    assert view.queue.stats().dead_lettered == 1


@pytest.mark.parametrize("path", ["/", "/dlq", "/requests", "/watches"])
def test_pages_carry_the_csp_run_no_inline_script_and_load_nothing_from_outside(
    view: Any, path: str
) -> None:
    response = client_for(view).get(path)
    assert response.headers["content-security-policy"] == CSP
    assert "'unsafe-inline'" not in CSP and "script-src 'self'" in CSP
    html = response.text
    assert not re.search(r"<script(?![^>]*\bsrc=)", html), "an inline script"
    assert not re.search(r"\bon[a-z]+\s*=", html), "an inline event handler"
    for url in re.findall(r'(?:src|href)="([^"]*)"', html):
        assert url.startswith("/"), f"an asset from outside: {url}"
