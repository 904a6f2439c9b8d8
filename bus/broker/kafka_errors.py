"""How aiokafka's failures become the broker seam's errors, within a time bound."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiokafka.errors import (
    InvalidTopicError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordTooLargeError,
    TopicAuthorizationFailedError,
)

from docbus.broker.base import BrokerError, BrokerUnavailable, RecordRejected

# Failures that are about the record or topic itself: sending it again cannot succeed.
REJECTIONS = (InvalidTopicError, MessageSizeTooLargeError, RecordTooLargeError, TopicAuthorizationFailedError)


def translate(what: str, exc: BaseException) -> BrokerError:
    """The seam's error for an aiokafka (or socket) failure during ``what``."""
    if isinstance(exc, REJECTIONS):
        return RecordRejected(f"{what}: Kafka refused it ({exc!r})")
    return BrokerUnavailable(f"{what}: Kafka is unavailable ({exc!r})")


@contextlib.asynccontextmanager
async def kafka_bound(what: str, seconds: float) -> AsyncIterator[None]:
    """Run a block against Kafka within ``seconds``; failures become :class:`BrokerError`."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except BrokerError:
        raise
    except TimeoutError as exc:
        raise BrokerUnavailable(f"{what}: Kafka did not answer within {seconds:g} s") from exc
    except (KafkaError, OSError) as exc:
        raise translate(what, exc) from exc
