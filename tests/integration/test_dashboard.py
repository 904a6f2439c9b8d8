"""The operators' dashboard over real HTTP (SQLite and PostgreSQL): who gets in, what the pages show, that text
from outside (an axis' refusal, a search) is never markup, and that the resend form cannot be sent by another site.
"""

from __future__ import annotations

import re

import httpx

from docbus.broker.base import OutgoingRecord
from docbus.broker.embedded import EmbeddedBroker
from docbus.delivery.dead_letters import DeadLetterStore
from docbus.store.agencies import Role
from docbus.store.messages import MessageStore
from docbus.topics import Topics

from ..conftest import RunningGateway
from .test_dead_letter_resend import gateway_settings as gateway_settings  # routes to two file drops
from .test_dead_letter_resend import messages_with_payloads
from .test_payload_retention import NATIONAL

OPERATOR, AGENCY = "H41.01", "000.00.00.G22"
HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def browser(gateway: RunningGateway, organ_id: str | None = None) -> httpx.AsyncClient:
    """A client signing in as a browser does: HTTP Basic, the API key as the password."""
    auth = httpx.BasicAuth("operator", gateway.keys[organ_id]) if organ_id else None
    return httpx.AsyncClient(base_url=gateway.base_url, auth=auth, timeout=30, follow_redirects=False)


async def dead_letter(gateway: RunningGateway, message_id: str, reason: str) -> int:
    store = DeadLetterStore(gateway.db, EmbeddedBroker(gateway.db), Topics())
    record = OutgoingRecord("unused", b"k", b"v", (("message-id", message_id.encode()),))
    return await store.add(
        message_id=message_id,
        destination="national",
        receivers=(NATIONAL,),
        reason=reason,
        attempts=[{"status": 200, "remote_code": "22", "retriable": False}],
        record=record,
    )


def assert_a_safe_page(response: httpx.Response) -> str:
    assert response.headers["content-type"].startswith("text/html")
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
    assert "<script" not in response.text.lower()
    return response.text


async def test_only_operators_get_in(gateway: RunningGateway) -> None:
    await gateway.register(OPERATOR, Role.OPERATOR)
    await gateway.register(AGENCY)
    async with browser(gateway) as anonymous:
        asked = await anonymous.get("/dashboard")
        wrong = await anonymous.get("/dashboard", auth=httpx.BasicAuth("x", "dbk_not-a-key"))
    assert asked.status_code == wrong.status_code == 401
    assert asked.headers["www-authenticate"].startswith('Basic realm="docbus operators"')
    assert_a_safe_page(asked)
    async with browser(gateway, AGENCY) as agency:
        refused = await agency.get("/dashboard/messages")
    assert refused.status_code == 403
    assert "operator credentials" in assert_a_safe_page(refused)
    async with browser(gateway, OPERATOR) as operator:
        assert (await operator.get("/dashboard")).status_code == 200
    async with gateway.client(OPERATOR) as api:  # a Bearer key works too (scripts, curl)
        assert (await api.get("/dashboard")).status_code == 200


async def test_the_pages_show_flows_messages_timelines_and_dead_letters(gateway: RunningGateway) -> None:
    await gateway.register(OPERATOR, Role.OPERATOR)
    ids = await messages_with_payloads(gateway.db, 3)
    letter = await dead_letter(gateway, ids[0], HOSTILE)
    async with browser(gateway, OPERATOR) as operator:
        overview = assert_a_safe_page(await operator.get("/dashboard"))
        detail = assert_a_safe_page(await operator.get(f"/dashboard/messages/{ids[0]}"))
        letters = assert_a_safe_page(await operator.get("/dashboard/dead-letters"))
        searched = assert_a_safe_page(await operator.get("/dashboard/messages", params={"receiver": NATIONAL}))
        nothing = assert_a_safe_page(await operator.get("/dashboard/messages", params={"sender": HOSTILE}))
        typo = await operator.get("/dashboard/messages", params={"status": "DELIVERD"})
        missing = await operator.get("/dashboard/messages/01JD0000000000000000000000")

    assert all(message_id in overview for message_id in ids)
    assert 'href="/dashboard/dead-letters?destination=national">national</a></td><td><span class="num">1<' in overview
    assert '<td>database</td><td><span class="ok">ok</span>' in overview
    for event in ("ACCEPTED", "DEAD"):
        assert f"<td>{event}</td>" in detail
    assert f'action="/dashboard/dead-letters/{letter}/resend"' in letters
    # What an axis wrote in its refusal, and what a caller typed, are text, never markup.
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in letters
    assert "onerror=alert(1)>" not in letters
    assert all(message_id in searched for message_id in ids)
    assert "no message" in nothing and 'value="&lt;script&gt;' in nothing
    assert typo.status_code == 400 and "DELIVERED" in assert_a_safe_page(typo)
    assert missing.status_code == 404


async def test_a_resend_must_come_from_the_dashboard_itself(gateway: RunningGateway) -> None:
    await gateway.register(OPERATOR, Role.OPERATOR)
    ids = await messages_with_payloads(gateway.db, 1)
    letter = await dead_letter(gateway, ids[0], "refused for good (22)")
    action = f"/dashboard/dead-letters/{letter}/resend"
    async with browser(gateway, OPERATOR) as operator:
        page = (await operator.get("/dashboard/dead-letters")).text
        token = re.search(r'name="token" value="([0-9a-f]{64})"', page)
        assert token is not None
        form = {"token": token.group(1)}
        own = {"Origin": gateway.base_url}
        attempts = {
            "no origin": await operator.post(action, data=form),
            "another site": await operator.post(action, data=form, headers={"Origin": "https://evil.example"}),
            "no token": await operator.post(action, headers=own),
            "another letter's token": await operator.post(
                f"/dashboard/dead-letters/{letter + 1}/resend", data=form, headers=own
            ),
        }
        for why, answer in attempts.items():
            assert answer.status_code == 403, why
        proxied = await operator.post(  # the token checked behind a proxy that reports the host the browser used
            action,
            data={"token": "0" * 64},
            headers={"Origin": "https://bus.example.gov.vn", "X-Forwarded-Host": "bus.example.gov.vn"},
        )
        assert proxied.status_code == 403 and "token" in proxied.text
        assert (await DeadLetterStore(gateway.db, EmbeddedBroker(gateway.db), Topics()).get(letter)).resent_at is None

        done = await operator.post(action, data=form, headers=own)
        assert done.status_code == 303
        assert done.headers["location"] == f"/dashboard/dead-letters?destination=national&resent={letter}"
        after = assert_a_safe_page(await operator.get(done.headers["location"]))
    assert f"Dead letter {letter} was put back." in after
    assert f"by {OPERATOR}" in after and action not in after
    assert "RESENT" in [e.type for e in await MessageStore(gateway.db).timeline(ids[0])]
