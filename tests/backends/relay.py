"""Sentry's own event normalizer (Relay, through the `sentry-relay` wheel) as a test oracle.

Spotlight accepts anything; Sentry does not. Every event and transaction payload the tests read
back from Spotlight is run through `StoreNormalizer.normalize_event`, the normalization Sentry
applies on ingestion, and the problems it reports are returned so a test can assert there are
none.

Example:
    assert normalization_problems(transaction_payload) == []
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from sentry_relay.exceptions import RelayError
from sentry_relay.processing import StoreNormalizer

# Timestamp windows as a hosted Sentry applies them: a minute ahead, thirty days back. An event
# outside them gets a `future_timestamp` / `past_timestamp` problem instead of silently moving.
MAX_SECS_IN_FUTURE = 60
MAX_SECS_IN_PAST = 30 * 24 * 3600


def store_normalizer(
    *,
    project_id: int = 0,
    client: str | None = None,
    key_id: str | None = "public",
    sent_at: str | None = None,
) -> StoreNormalizer:
    """A normalizer configured the way Sentry's ingestion sets one up for a new event.

    StoreNormalizer takes its configuration as keyword arguments that become Relay's
    `StoreConfig` (unknown names are ignored silently, hence the explicit list here).
    `remove_other` makes unknown top-level attributes problems (`invalid_attribute`) rather than
    data that vanishes without a word.
    """
    config: dict[str, Any] = {
        "project_id": project_id,
        "key_id": key_id,
        "protocol_version": "7",
        "received_at": _rfc3339(time.time()),
        "max_secs_in_future": MAX_SECS_IN_FUTURE,
        "max_secs_in_past": MAX_SECS_IN_PAST,
        "enable_trimming": True,
        "is_renormalize": False,
        "remove_other": True,
        "normalize_user_agent": True,
    }
    if client is not None:
        config["client"] = client
    if sent_at is not None:
        config["sent_at"] = sent_at
    normalizer: StoreNormalizer = StoreNormalizer(**config)
    return normalizer


def normalize(payload: Mapping[str, Any], *, sent_at: str | None = None) -> dict[str, Any]:
    """The payload as Sentry would store it; raises RelayError for an invalid transaction."""
    normalizer = store_normalizer(client=_client_of(payload), sent_at=sent_at)
    normalized: dict[str, Any] = normalizer.normalize_event(dict(payload))
    return normalized


def normalization_problems(
    payload: Mapping[str, Any], *, sent_at: str | None = None
) -> list[dict[str, Any]]:
    """What Sentry's normalization objects to in an event or transaction payload.

    Returns Relay's `errors` list (each with `type`, `name`, often `value` and `reason`). A
    payload Relay refuses outright (a transaction without ids, or ending before it starts) is
    reported as one problem whose type is the exception's name, so a test sees it the same way.
    """
    try:
        normalized = normalize(payload, sent_at=sent_at)
    except RelayError as error:
        # Relay appends a native stack trace to the message; the first line says what is wrong.
        reason = str(error).split("\n", 1)[0]
        return [{"type": type(error).__name__, "reason": reason}]
    return list(normalized.get("errors") or [])


def _client_of(payload: Mapping[str, Any]) -> str | None:
    # Sentry takes the client from the X-Sentry-Auth header, which names the SDK the same way.
    sdk = payload.get("sdk")
    if isinstance(sdk, Mapping) and sdk.get("name") and sdk.get("version"):
        return f"{sdk['name']}/{sdk['version']}"
    return None


def _rfc3339(unix_s: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix_s))
