"""Reliability and security: concurrency, outages, fork, exit, bad input and secrets."""
