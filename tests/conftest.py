"""Fixtures for the real backends the integration tests run against (see tests/backends/).

A backend that is not installed makes its fixture fail, naming `bash tests/backends/setup.sh`;
it never skips, so a machine without the backends cannot pass the suite by accident.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

from tests.backends._support import BackendError
from tests.backends.jaeger import Jaeger
from tests.backends.otlp_recorder import OtlpGrpcRecorder, OtlpHttpRecorder
from tests.backends.spotlight import Spotlight

T = TypeVar("T")


def _started(make: Callable[[], T]) -> T:
    try:
        return make()
    except BackendError as error:
        message = str(error)
    # Outside the except block: the report shows the message once, not a chained traceback.
    pytest.fail(message, pytrace=False)


@pytest.fixture(scope="session")
def _jaeger_server() -> Iterator[Jaeger]:
    server = _started(lambda: Jaeger.from_cache().start())
    yield server
    server.stop()


@pytest.fixture
def jaeger(_jaeger_server: Jaeger) -> Jaeger:
    """The session's Jaeger (memory storage, 127.0.0.1). Tests tell their data apart by
    service name or attributes; one that stops it may restart() it, and a test left it
    stopped gets it started again on the same ports."""
    if not _jaeger_server.is_running:
        _started(_jaeger_server.start)
    return _jaeger_server


@pytest.fixture(scope="session")
def _spotlight_server() -> Iterator[Spotlight]:
    server = _started(lambda: Spotlight().start())
    yield server
    server.stop()


@pytest.fixture
def spotlight(_spotlight_server: Spotlight) -> Spotlight:
    """The session's Spotlight, emptied before each test; send to `spotlight.dsn`."""
    if not _spotlight_server.is_running:
        _started(_spotlight_server.start)
    _spotlight_server.clear()
    return _spotlight_server


@pytest.fixture
def otlp_http_recorder() -> Iterator[OtlpHttpRecorder]:
    """An OTLP/HTTP receiver of the test's own on 127.0.0.1 that records every request."""
    with OtlpHttpRecorder() as recorder:
        yield recorder


@pytest.fixture
def otlp_grpc_recorder() -> Iterator[OtlpGrpcRecorder]:
    """An OTLP gRPC TraceService of the test's own on 127.0.0.1 that records every call."""
    with OtlpGrpcRecorder() as recorder:
        yield recorder
