"""Serve agent-trace's metrics for Prometheus to scrape (extra `agent-trace[prometheus]`)."""

from __future__ import annotations

import threading
from typing import Any

from opentelemetry.sdk.metrics.export import MetricReader

__all__ = ["start_prometheus_reader"]

_servers: dict[tuple[str, int], Any] = {}
_lock = threading.Lock()


def start_prometheus_reader(host: str, port: int) -> MetricReader:
    """A metric reader exposed at `http://{host}:{port}/metrics` (one server per address).

    The server is started once per address and kept for the life of the process, so that a
    reconfiguration does not leave Prometheus scraping a dead port.
    """
    try:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from prometheus_client import start_http_server
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise ImportError(
            "serving metrics to Prometheus needs the prometheus extra: "
            "pip install 'agent-trace[prometheus]'"
        ) from exc

    reader = PrometheusMetricReader()
    with _lock:
        if (host, port) not in _servers:
            _servers[(host, port)] = start_http_server(port, addr=host)
    return reader
