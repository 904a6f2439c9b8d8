"""The operators' dashboard: ``/dashboard``, plain HTML pages over the same queries as the operations API.

An operator on duty opens it in a browser and sees whether documents flow: readiness, the last hour's flows per
sender and destination, dead letters waiting, the newest messages; follows a message to its timeline; searches;
puts dead letters back. Pages are rendered on the server, carry no script at all (``Content-Security-Policy:
script-src 'none'``), and refresh themselves where that helps.

Sign-in is the browser's own: HTTP Basic, with the operator's API key as the password (the user name is
ignored), so no session or cookie exists to steal; only operator credentials are let in. A browser sends Basic
credentials on its own, so the one form that changes anything (resend) is guarded twice against other sites
making the browser submit it: its ``Origin`` must be this gateway's, and it carries a token that only the key's
holder can compute (an HMAC of the dead letter's id under the key).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable
from datetime import datetime
from html import escape
from typing import Annotated, Any
from urllib.parse import parse_qs, urlencode, urlsplit

import orjson
from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from docbus.delivery.dead_letters import DeadLetterStore
from docbus.destinations import destinations_overview
from docbus.envelope import MessageStatus
from docbus.errors import Forbidden, NotFound, RequestRejected, Unauthenticated
from docbus.flows import BadWindow, arrival_bounds, flow_report, parse_window
from docbus.gateway.body import read_capped_body
from docbus.gateway.deps import State, bearer_key
from docbus.gateway.routes_meta import readiness
from docbus.store.agencies import Agency, Role

router = APIRouter(prefix="/dashboard", include_in_schema=False)

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
FORM_BYTES = 4096  # the resend form holds one token
CHALLENGE = {"WWW-Authenticate": 'Basic realm="docbus operators", charset="UTF-8"'}
STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1b1f24;background:#f6f7f9}
header{background:#12355b;color:#fff;padding:10px 20px}header a{color:#fff;margin-right:16px}
main{padding:16px 20px}h2{font-size:16px;margin:20px 0 8px}
table{border-collapse:collapse;background:#fff;width:100%}td,th{border:1px solid #d8dde3;padding:4px 8px;
text-align:left;vertical-align:top}th{background:#eef1f4}.num{text-align:right}.ok{color:#137333}
.bad{color:#b3261e;font-weight:600}.muted{color:#5f6b7a}code{font-size:12px}form.inline{display:inline}
"""


def _key_from(request: Request) -> str | None:
    """The API key from ``Authorization``: Basic (the password; what a browser sends) or Bearer."""
    bearer = bearer_key(request)
    if bearer is not None:
        return bearer
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2] or None
    return None


async def _operator(request: Request, state: State) -> Agency:
    caller = await state.directory.authenticate(_key_from(request), state.client_certificates.sha256(request.scope))
    if caller.role is not Role.OPERATOR:
        raise Forbidden("the dashboard is for operator credentials")
    return caller


Operator = Annotated[Agency, Depends(_operator)]


def dashboard_problem(exc: RequestRejected) -> Response:
    """Refusals on dashboard pages are pages too; 401 asks the browser for the operator's key."""
    body = _page("docbus", f"<h2>{exc.status} {escape(exc.title)}</h2><p>{escape(exc.detail)}</p>", nav=False)
    headers = {**SECURITY_HEADERS, **(CHALLENGE if isinstance(exc, Unauthenticated) else {})}
    return HTMLResponse(body, status_code=exc.status, headers=headers)


def resend_token(request: Request, dead_id: int) -> str:
    key = _key_from(request) or ""
    return hmac.new(key.encode(), f"resend:{dead_id}".encode(), hashlib.sha256).hexdigest()


@router.get("")
async def overview(request: Request, state: State, caller: Operator, since: str = "1h") -> HTMLResponse:
    try:
        window = parse_window(since, None)
    except BadWindow as exc:
        raise RequestRejected(str(exc)) from None
    report = await flow_report(state.db, window)
    ready = {**await readiness(state), "outbox backlog": str(await state.relay.backlog())}
    newest = await state.messages.search(visible_to=None, limit=20)
    windows = " ".join(
        f'<a href="?since={w}">{w}</a>' if w != since else f"<b>{w}</b>" for w in ("15m", "1h", "6h", "1d", "7d")
    )
    destinations = await destinations_overview(
        state.db, state.routes, report_seconds=state.settings.health_report_seconds
    )
    parts = [
        "<h2>Tình trạng / Readiness</h2>",
        _table(["part", "state"], [[name, _state(value)] for name, value in ready.items()]),
        "<h2>Điểm đến / Destinations now</h2>",
        _table(
            ["destination", "state", "in flight", "last delivered", "last failure", "receipts"],
            [
                [
                    d["name"],
                    _state(d["state"]),
                    _num(d["in_flight"]),
                    d["last_success_at"] or "",
                    _failure(d["last_failure"], "at") if d["state"] != "up" else "",
                    _failure(d["receipts_failing"], "since") or "fetched",
                ]
                for d in destinations
            ],
            empty="no destinations",
        ),
        f"<h2>Luồng / Flows received in the last {escape(since)}</h2><p>{windows}</p>",
        _table(
            ["sender", "received", "by status"],
            [[s["sender"], _num(s["received"]), _counts(s["by_status"])] for s in report["senders"]],
            empty="nothing received in this window",
        ),
        _table(
            ["sender", "destination", "messages", "by state", "oldest in flight since", "delivery ms p50 / p99"],
            [
                [
                    d["sender"],
                    d["destination"],
                    _num(d["messages"]),
                    _counts(d["by_state"]),
                    d["oldest_in_flight_received_at"] or "",
                    _latency(d["delivery_ms"]),
                ]
                for d in report["destinations"]
            ],
            empty="nothing forwarded in this window",
        ),
        "<h2>Thư chết / Dead letters waiting</h2>",
        _table(
            ["destination", "waiting", "oldest"],
            [
                [
                    f'<a href="/dashboard/dead-letters?{escape(urlencode({"destination": w["destination"]}))}">'
                    f"{escape(w['destination'])}</a>",
                    _num(w["waiting"]),
                    w["oldest_created_at"],
                ]
                for w in report["dead_letters_waiting"]
            ],
            empty="none",
            raw_first=True,
        ),
        f"<p>Outbox: {_num(report['outbox']['unpublished'])} unpublished.</p>",
        '<h2>Thông điệp mới / Newest messages <a href="/dashboard/messages">search</a></h2>',
        _messages_table(newest),
    ]
    return _html(_page("docbus · overview", "".join(parts), refresh=10))


@router.get("/messages")
async def messages_page(
    request: Request,
    state: State,
    caller: Operator,
    sender: str | None = None,
    receiver: str | None = None,
    business_id: str | None = None,
    status: str | None = None,
    since: str | None = None,
    before: str | None = None,
) -> HTMLResponse:
    fields = {"sender": sender, "receiver": receiver, "business_id": business_id, "status": status, "since": since}
    fields = {k: (v.strip() or None) if v else None for k, v in fields.items()}
    try:
        start, end = arrival_bounds(fields["since"], None)
        wanted = MessageStatus(fields["status"]) if fields["status"] else None  # any letter case
    except BadWindow as exc:
        raise RequestRejected(str(exc)) from None
    except ValueError:
        raise RequestRejected(
            f"no status {fields['status']!r}; one of {', '.join(s.value for s in MessageStatus)}"
        ) from None
    limit = 50
    found = await state.messages.search(
        visible_to=None,
        sender=fields["sender"],
        receiver=fields["receiver"],
        business_id=fields["business_id"],
        status=wanted,
        since=start,
        until=end,
        before=before,
        limit=limit,
    )
    inputs = "".join(
        f'<label>{name} <input name="{name}" value="{escape(value or "")}"></label> ' for name, value in fields.items()
    )
    more = ""
    if len(found) == limit:
        query = urlencode({**{k: v for k, v in fields.items() if v}, "before": found[-1].id})
        more = f'<p><a href="/dashboard/messages?{escape(query)}">older →</a></p>'
    body = f'<h2>Tìm thông điệp / Search messages</h2><form method="get">{inputs}<button>search</button></form>'
    return _html(_page("docbus · messages", body + _messages_table(found) + more))


@router.get("/messages/{message_id}")
async def message_page(message_id: str, state: State, caller: Operator) -> HTMLResponse:
    found = await state.messages.with_timeline(message_id)
    if found is None:
        raise NotFound(f"no message {message_id}")
    record, timeline = found
    facts = record.as_dict()
    rows = [[k, _plain(v)] for k, v in facts.items() if v is not None]
    events = [
        [str(e.seq), e.type, _when(e.at), e.actor or "", e.destination or "", _plain(e.detail or "")] for e in timeline
    ]
    body = (
        f"<h2>Thông điệp / Message {escape(message_id)}</h2>"
        + _table(["field", "value"], rows)
        + "<h2>Dòng thời gian / Timeline</h2>"
        + _table(["#", "event", "at", "actor", "destination", "detail"], events)
    )
    return _html(_page(f"docbus · {message_id}", body, refresh=10))


@router.get("/dead-letters")
async def dead_letters_page(
    request: Request,
    state: State,
    caller: Operator,
    destination: str | None = None,
    resent: int | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> HTMLResponse:
    letters = await DeadLetterStore(state.db, state.broker, state.topics).list(destination=destination, limit=limit)
    rows = []
    for letter in letters:
        if letter.resent_at is None:
            action = (
                f'<form class="inline" method="post" action="/dashboard/dead-letters/{letter.id}/resend">'
                f'<input type="hidden" name="token" value="{resend_token(request, letter.id)}">'
                "<button>resend</button></form>"
            )
        else:
            action = f'<span class="muted">resent {_when(letter.resent_at)} by {escape(letter.resent_by or "")}</span>'
        rows.append(
            [
                str(letter.id),
                f'<a href="/dashboard/messages/{escape(letter.message_id)}">{escape(letter.message_id)}</a>',
                escape(letter.destination),
                escape(letter.reason),
                str(len(letter.attempts)),
                _when(letter.created_at),
                action,
            ]
        )
    notice = f'<p class="ok">Dead letter {resent} was put back.</p>' if resent is not None else ""
    title = f"Thư chết / Dead letters{' of ' + escape(destination) if destination else ''}"
    headers = ["id", "message", "destination", "reason", "attempts", "since", ""]
    return _html(_page("docbus · dead letters", f"<h2>{title}</h2>{notice}" + _raw_table(headers, rows)))


@router.post("/dead-letters/{dead_id}/resend")
async def resend_from_dashboard(dead_id: int, request: Request, state: State, caller: Operator) -> Response:
    _same_origin(request)
    form = parse_qs((await read_capped_body(request, FORM_BYTES)).decode("ascii", "replace"))
    token = form.get("token", [""])[0]
    if not hmac.compare_digest(token, resend_token(request, dead_id)):
        raise Forbidden("the form's token does not match: reload the page and try again")
    letter = await DeadLetterStore(state.db, state.broker, state.topics).resend(dead_id, actor=caller.organ_id)
    query = urlencode({"destination": letter.destination, "resent": dead_id})
    return RedirectResponse(f"/dashboard/dead-letters?{query}", status_code=303, headers=SECURITY_HEADERS)


# ------------------------------------------------------------------------------------------------------ helpers


def _same_origin(request: Request) -> None:
    """The form came from a page of this site: its Origin (or Referer) names the host the browser asked for, as
    this gateway sees it or as a reverse proxy in front of it reports it (``X-Forwarded-Host``; a page of
    another site cannot make a browser send that header)."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    hosts = {request.headers.get("host", "")}
    forwarded = request.headers.get("x-forwarded-host")
    if forwarded:
        hosts.add(forwarded.split(",")[0].strip())
    if not origin or urlsplit(origin).netloc not in hosts - {""}:
        raise Forbidden("this form may only be sent from the dashboard's own pages")


def _messages_table(records: Iterable[Any]) -> str:
    rows = [
        [
            f'<a href="/dashboard/messages/{escape(r.id)}">{escape(r.id)}</a>',
            escape(r.kind),
            escape(r.sender),
            escape(", ".join(r.receivers)),
            escape(r.business_id or ""),
            _state(r.status),
            _when(r.received_at),
        ]
        for r in records
    ]
    headers = ["message", "kind", "sender", "receivers", "business id", "status", "received"]
    return _raw_table(headers, rows, empty="no message")


def _table(headers: list[str], rows: list[list[Any]], *, empty: str = "—", raw_first: bool = False) -> str:
    """Cells are escaped (the first column left as it is with ``raw_first``: a link built here)."""
    safe = [[cell if raw_first and i == 0 else _cell(cell) for i, cell in enumerate(row)] for row in rows]
    return _raw_table(headers, safe, empty=empty)


def _raw_table(headers: list[str], rows: list[list[str]], *, empty: str = "—") -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    if not rows:
        return f'<table><tr>{head}</tr><tr><td colspan="{len(headers)}" class="muted">{escape(empty)}</td></tr></table>'
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(value: Any) -> str:
    if isinstance(value, _Safe):
        return str(value)
    return escape("" if value is None else str(value))


class _Safe(str):
    """Markup built here from escaped parts."""


def _num(value: int) -> _Safe:
    return _Safe(f'<span class="num">{value:,}</span>')


def _counts(counts: dict[str, int]) -> _Safe:
    return _Safe(", ".join(f"{escape(k)} {v:,}" for k, v in sorted(counts.items())) or "—")


def _failure(failure: dict[str, Any] | None, when: str) -> str:
    return f"{failure[when]}: {failure['reason']}" if failure else ""


def _latency(delivery: dict[str, Any] | None) -> str:
    return f"{delivery['p50']} / {delivery['p99']}" if delivery else ""


def _state(value: str) -> _Safe:
    good = value in ("ok", "up", "DELIVERED", "ACKNOWLEDGED", "COMPLETED", "PUBLISHED", "ACCEPTED") or value.isdigit()
    bad = value.startswith(("down", "degraded", "failing")) or value in ("FAILED", "DEAD")
    css = "ok" if good else "bad" if bad else ""
    return _Safe(f'<span class="{css}">{escape(value)}</span>')


def _when(at: datetime) -> _Safe:
    return _Safe(escape(at.isoformat(timespec="seconds")))


def _plain(value: Any) -> _Safe:
    if isinstance(value, dict | list):
        return _Safe(f"<code>{escape(orjson.dumps(value).decode())}</code>")
    return _Safe(escape(str(value)))


def _page(title: str, body: str, *, refresh: int | None = None, nav: bool = True) -> str:
    meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh else ""
    links = (
        '<a href="/dashboard">overview</a><a href="/dashboard/messages">messages</a>'
        '<a href="/dashboard/dead-letters">dead letters</a><a href="/docs">API</a>'
        if nav
        else ""
    )
    return (
        f'<!doctype html><html lang="vi"><head><meta charset="utf-8"><title>{escape(title)}</title>{meta}'
        f"<style>{STYLE}</style></head><body><header><b>docbus</b> &nbsp; {links}</header><main>{body}</main>"
        "</body></html>"
    )


def _html(body: str) -> HTMLResponse:
    return HTMLResponse(body, headers=SECURITY_HEADERS)
