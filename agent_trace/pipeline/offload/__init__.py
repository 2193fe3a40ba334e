"""The network sinks in a process of their own: `parent` (the application's side), `child`
(the export process) and `wire` (what goes between them)."""
