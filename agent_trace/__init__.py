"""agent-trace."""
