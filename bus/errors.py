"""The one error tree of docbus.

Every refusal the bus gives an agency is one of these classes, so the gateway can turn any of them into an
RFC 9457 ``application/problem+json`` answer without an isinstance list::

    DocbusError                      Raised for any failure docbus itself reports.
    └── RequestRejected              Raised when a request is refused; carries HTTP status and problem type.
        ├── NotWellFormed            400: the body is not well-formed XML/JSON, or is unsafe XML (DTD, entities).
        ├── Unauthenticated          401: no credential, or one the directory does not know.
        ├── Forbidden                403: the credential may not do this (e.g. sender is another agency).
        ├── NotFound                 404: no such resource visible to the caller.
        ├── IdempotencyConflict      409: the Idempotency-Key was used before for different content.
        ├── Conflict                 409: the same work is already in progress elsewhere (a bulk resend).
        ├── RequestTimeout           408: the body stopped arriving, or took longer than the read deadline.
        ├── PayloadGone              410: the payload was deleted by payload retention.
        ├── PayloadTooLarge          413: the body is over the configured cap (checked while reading).
        ├── UnsupportedMediaType     415: the content type is not one docbus accepts.
        ├── ValidationFailed         422: schema or semantic violation (duplicate receiver, bad organ id, ...).
        ├── TooManyRequests          429: the caller holds as many event streams as it may.
        │   └── RateLimited          429: the agency submits faster than its rate (with Retry-After).
        ├── ClientClosedRequest      499: the client went away before its body had arrived (never answered).
        └── ServiceUnavailable       503: a dependency the request needs is down.
            └── GatewayBusy          503: the bodies in flight fill this process' memory budget (Retry-After).

The broker's, the adapters' and the adapter registry's errors (``BrokerError``, ``DeliveryError``,
``AdapterConfigError``) derive from ``DocbusError`` too; they are the bus' own failures, never a caller's answer.

Errors that concern the message carry ``errors``: a list of :class:`FieldError`, each naming where (XPath or
JSON pointer, line, column), which rule, and what was expected, in Vietnamese and English.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

PROBLEM_BASE = "https://docbus.dev/problems/"


@dataclass(frozen=True, slots=True)
class FieldError:
    """One precise complaint about a message.

    ``path`` is an XPath (XML) or a JSON pointer (JSON); ``line``/``column`` are set for XML.
    ``rule`` is a stable machine-readable name (``xsd``, ``required``, ``max-length``, ``organ-id``,
    ``duplicate-receiver``, ``not-well-formed``, ``dtd-forbidden``, ...).
    """

    path: str
    rule: str
    message_en: str
    message_vi: str
    line: int | None = None
    column: int | None = None
    expected: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


class DocbusError(Exception):
    """Raised for any failure docbus itself reports."""


@dataclass(eq=False)
class RequestRejected(DocbusError):
    """Raised when a request is refused; the gateway renders it as problem+json."""

    detail: str
    errors: list[FieldError] = field(default_factory=list)

    status: ClassVar[int] = 400
    slug: ClassVar[str] = "bad-request"
    title: ClassVar[str] = "Bad request"

    def __post_init__(self) -> None:
        super().__init__(self.detail)

    @property
    def type_uri(self) -> str:
        return PROBLEM_BASE + self.slug


def problem_body(exc: RequestRejected, instance: str | None = None) -> dict[str, Any]:
    """The RFC 9457 body of a refusal: what the gateway answers and what ``docbus check`` prints."""
    body: dict[str, Any] = {
        "type": exc.type_uri,
        "title": exc.title,
        "status": exc.status,
        "detail": exc.detail,
    }
    if instance:
        body["instance"] = instance
    if exc.errors:
        body["errors"] = [e.as_dict() for e in exc.errors]
    return body


class NotWellFormed(RequestRejected):
    """Raised when the body cannot be parsed, or is XML that uses DTDs or entities."""

    status = 400
    slug = "not-well-formed"
    title = "Message is not well-formed"


class Unauthenticated(RequestRejected):
    """Raised when no credential is presented or the directory does not know it."""

    status = 401
    slug = "unauthenticated"
    title = "Authentication required"


class Forbidden(RequestRejected):
    """Raised when the authenticated agency may not do what it asks."""

    status = 403
    slug = "forbidden"
    title = "Not allowed for this agency"


class NotFound(RequestRejected):
    """Raised when a resource does not exist or is not visible to the caller."""

    status = 404
    slug = "not-found"
    title = "Not found"


class PayloadGone(RequestRejected):
    """Raised when a message's payload was deleted by payload retention; its record and timeline remain."""

    status = 410
    slug = "payload-purged"
    title = "The payload was deleted by retention"


class IdempotencyConflict(RequestRejected):
    """Raised when an Idempotency-Key is reused for different content."""

    status = 409
    slug = "idempotency-conflict"
    title = "Idempotency key reused with different content"


class Conflict(RequestRejected):
    """Raised when the same work is already being done by another request or process."""

    status = 409
    slug = "conflict"
    title = "The same work is in progress elsewhere"


class PayloadTooLarge(RequestRejected):
    """Raised while reading a body as soon as it passes the size cap."""

    status = 413
    slug = "payload-too-large"
    title = "Message is too large"


class UnsupportedMediaType(RequestRejected):
    """Raised when the content type is not XML or JSON."""

    status = 415
    slug = "unsupported-media-type"
    title = "Unsupported media type"


class ValidationFailed(RequestRejected):
    """Raised when a message breaks its schema or a semantic rule."""

    status = 422
    slug = "validation-failed"
    title = "Message does not conform to its schema"


class TooManyRequests(RequestRejected):
    """Raised when a caller already holds as many of a limited resource (event streams) as it may."""

    status = 429
    slug = "too-many-requests"
    title = "Too many requests"


@dataclass(eq=False)
class RateLimited(TooManyRequests):
    """Raised when an agency submits faster than the gateway's per-agency rate; says when to try again."""

    retry_after: float = 1.0  # seconds

    slug = "rate-limited"
    title = "Too many messages from this agency"


class ServiceUnavailable(RequestRejected):
    """Raised when a dependency the request needs (database) is down."""

    status = 503
    slug = "service-unavailable"
    title = "Service unavailable"


@dataclass(eq=False)
class StoreUnavailable(ServiceUnavailable):
    """Raised when a submission could not be made durable: the database or the payload store refused the write
    (full, or failing). Nothing was acknowledged, so the sender must retry, and ``retry_after`` says when it is
    worth it. ``nothing_stored`` is set when the failure is known to have stored nothing (SQLite rolls back what
    it could not commit; a lost connection to PostgreSQL leaves the commit's fate open), so what was written
    beside the rows (a claim-checked payload) can be removed."""

    retry_after: float = 5.0  # seconds
    nothing_stored: bool = False

    slug = "store-unavailable"
    title = "The message could not be stored"


@dataclass(eq=False)
class GatewayBusy(ServiceUnavailable):
    """Raised when the request bodies a gateway process holds would pass its memory budget: fifty agencies
    uploading 50 MB packets at once must slow down, not take the process (and every other agency) down with them."""

    retry_after: float = 1.0  # seconds

    slug = "busy"
    title = "The gateway holds as many request bodies as it may"


class RequestTimeout(RequestRejected):
    """Raised when a body stops arriving for longer than the idle timeout, or is still arriving at the read
    deadline: a client that trickles bytes would otherwise hold a connection, and what it sent, for ever."""

    status = 408
    slug = "request-timeout"
    title = "The request body did not arrive in time"


class InternalError(RequestRejected):
    """What a client is told when the gateway failed in a way it did not expect; the traceback goes to its log."""

    status = 500
    slug = "internal-error"
    title = "Internal error"


class ClientClosedRequest(RequestRejected):
    """Raised when the client disconnects before its body has arrived. Nobody receives the answer; it exists so
    the refusal is counted with the others (status 499, as proxies log it) instead of surfacing as a crash."""

    status = 499
    slug = "client-closed-request"
    title = "The client closed the connection before its body had arrived"
