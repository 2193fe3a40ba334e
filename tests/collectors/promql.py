"""Just enough PromQL reading to list the metric names an expression selects.

Prometheus' own parser is Go; promtool checks the syntax (see test_metric_names.py) and this
finds the names: it blanks out strings, label matchers, ranges and grouping-label lists, then
takes every identifier that is not a function call, keyword or number. `{__name__="x"}`
selectors count as x; a `__name__` regex is returned as-is for the caller to reject.
"""

from __future__ import annotations

import re

# Grafana's variables in a dashboard query, replaced by something PromQL accepts.
GRAFANA_SUBSTITUTIONS = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
    "$job": ".*",
    "$algorithm": ".*",
    "$agent": ".*",
}

_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
    "and", "or", "unless", "atan2", "inf", "nan", "start", "end",
}  # fmt: skip
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_NAME_MATCHER = re.compile(r'__name__\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(
    r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
_IDENTIFIER = re.compile(r"(?<![\w.:$])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?")


def substitute_grafana_variables(expr: str) -> str:
    for variable, value in sorted(GRAFANA_SUBSTITUTIONS.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(variable, value)
    return expr


def metric_names(expr: str) -> set[str]:
    """Metric names selected by a PromQL expression (Grafana variables allowed).

    A `__name__` matcher other than `=` comes back as `__name__<op>"<value>"`, which is never
    a valid metric name, so a check against a list of names rejects it.
    """
    expr = substitute_grafana_variables(expr)

    names: set[str] = set()
    for op, value in _NAME_MATCHER.findall(expr):
        names.add(value if op == "=" else f'__name__{op}"{value}"')

    # Label matchers hold strings, so they go first; then whatever strings remain
    # (label_replace arguments, say).
    text = _MATCHERS.sub(" ", expr)
    text = _STRING.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    for identifier, call in _IDENTIFIER.findall(text):
        if call or identifier.lower() in _KEYWORDS:
            continue
        names.add(identifier)
    return names


def label_values_metric(query: str) -> str | None:
    """The metric of a Grafana `label_values(metric{...}, label)` variable query, if any."""
    match = re.fullmatch(r"\s*label_values\((.*),\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*", query)
    return match.group(1) if match else None
