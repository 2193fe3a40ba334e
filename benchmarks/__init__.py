"""agent-trace's benchmarks: what tracing costs, as ratios to the raw OpenTelemetry SDK.

Run `python -m benchmarks` (add `--quick` for the CI smoke run, `--fastapi` for the HTTP
figures); see BENCHMARKS.md for the latest figures and how they are taken.
"""
