"""Sinks: OTLP (Jaeger or a Collector), Sentry (envelopes or OTLP), the local file, memory."""
