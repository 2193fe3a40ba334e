"""Real backends for agent-trace's integration tests: Jaeger, Spotlight, OTLP recorders, Relay.

Everything here listens on 127.0.0.1 only and is stopped by PID. `bash tests/backends/setup.sh`
installs what the servers need (the Jaeger binary, Spotlight's node_modules).
"""
