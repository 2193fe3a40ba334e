"""The paired-ratio harness: variants interleaved round by round, ratios taken within a round.

These machines are shared: absolute times drift by 15 % between runs, and a neighbour's job
can slow one stretch of a run. Two variants measured in the same round see the same
neighbours, so the ratio of their costs within a round is far steadier than either cost.
Every figure is therefore the median over rounds of `variant cost / baseline cost`, with
the 10th and 90th percentile of those ratios as its spread.

A round runs every variant once, in a random order (a fixed order would hand one variant the
cache and frequency state the other left behind). Each sample is sized so that it takes
about `sample_s` of wall time, garbage is collected before it and the collector is off while
it runs (a collection landing in one variant's sample and not the other's is noise, not cost).
"""

from __future__ import annotations

import gc
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Case", "Comparison", "Row", "Settings", "compare", "format_table", "quantile"]


@dataclass(frozen=True)
class Settings:
    """How hard to measure: the quick mode shrinks every knob for CI smoke runs."""

    quick: bool = False
    rounds: int = 31
    warmup_rounds: int = 3
    sample_s: float = 0.04
    seed: int = 20240611

    @classmethod
    def for_mode(cls, quick: bool, rounds: int | None = None) -> Settings:
        if quick:
            return cls(quick=True, rounds=rounds or 7, warmup_rounds=1, sample_s=0.025)
        return cls(quick=False, rounds=rounds or 31)


class Case:
    """One variant of a figure. Subclasses override `run`, or `sample` to measure otherwise.

    `before` and `after` run around every sample, outside the measurement: they install the
    variant's pipeline, refill a queue, or wait for export threads to finish the sample's
    spans so that their work does not spill into the next variant's sample.
    """

    name = "case"

    def setup(self) -> None:
        """Called once before calibration."""

    def before(self) -> None:
        """Called before each sample, outside the measurement."""

    def after(self) -> None:
        """Called after each sample, outside the measurement."""

    def teardown(self) -> None:
        """Called once at the end."""

    def run(self, n: int) -> None:
        """Do the measured operation `n` times."""
        raise NotImplementedError

    def sample(self, n: int) -> float:
        """The cost of `n` operations in seconds (wall time of `run` unless overridden)."""
        start = time.perf_counter()
        self.run(n)
        return time.perf_counter() - start


class FunctionCase(Case):
    """A case made of plain callables, for figures that need no state of their own."""

    def __init__(
        self,
        name: str,
        run: Callable[[int], object],
        *,
        before: Callable[[], object] | None = None,
        after: Callable[[], object] | None = None,
    ) -> None:
        self.name = name
        self._run = run
        self._before = before
        self._after = after

    def before(self) -> None:
        if self._before is not None:
            self._before()

    def after(self) -> None:
        if self._after is not None:
            self._after()

    def run(self, n: int) -> None:
        self._run(n)


@dataclass
class Comparison:
    """Per-operation costs of every case in every measured round, in seconds."""

    names: list[str]
    costs: dict[str, list[float]]
    sizes: dict[str, int]

    def ratios(self, name: str, baseline: str) -> list[float]:
        return [v / b for v, b in zip(self.costs[name], self.costs[baseline], strict=True)]

    def median_cost(self, name: str) -> float:
        return statistics.median(self.costs[name])


@dataclass
class Row:
    """One line of the results table (and of the JSON a figure worker prints)."""

    figure: str
    value: float
    unit: str
    low: float | None = None
    high: float | None = None
    goal: str | None = None
    met: bool | None = None
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    # The figure module that made the row (a key of `benchmarks.__main__.FIGURES`).
    key: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile, `q` in [0, 1] (exact for the small samples used here)."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    pos = (len(ordered) - 1) * q
    lower = int(pos)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (pos - lower)


_SETTLE_S = 0.02


def _timed(case: Case, n: int) -> tuple[float, float]:
    """(cost per operation, wall seconds) of one sample of `n` operations."""
    case.before()
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        cost = case.sample(n)
        wall = time.perf_counter() - start
    finally:
        gc.enable()
    case.after()
    # Let threads that `after` started and joined (agent-trace's flush runs each sink's flush
    # on a helper thread) finish exiting: a thread that has returned from `join()` still
    # takes the GIL once more to tear itself down, and a sample started at once ran 20 %
    # slower (30 vs 37 us a turn span) than one started 20 ms later.
    time.sleep(_SETTLE_S)
    return cost / n, wall


def _calibrate(case: Case, sample_s: float, max_n: int) -> int:
    """The operation count that makes one sample last about `sample_s` of wall time."""
    n = 1
    while True:
        _, wall = _timed(case, n)
        if wall >= sample_s / 4 or n >= max_n:
            break
        n *= 4 if wall < sample_s / 40 else 2
    _, wall = _timed(case, n)
    scaled = int(n * sample_s / max(wall, 1e-6))
    return max(1, min(max_n, scaled))


def compare(
    cases: Sequence[Case],
    settings: Settings,
    *,
    max_n: int = 1_000_000,
    sizes: dict[str, int] | None = None,
    same_n: bool = True,
) -> Comparison:
    """Measure every case in `settings.rounds` interleaved rounds after the warm-up rounds.

    `max_n` caps a sample's operation count (a queue that must not overflow within one
    sample, say); `sizes` fixes the count for the cases it names instead of calibrating.
    With `same_n`, every calibrated case runs the count of the slowest one: the variants of
    a round then hold as many spans in their queues and wake their export threads as often,
    and the slowest sample lasts `sample_s`.
    """
    rng = random.Random(settings.seed)
    for case in cases:
        case.setup()
    try:
        chosen = dict(sizes or {})
        calibrated = {
            case.name: _calibrate(case, settings.sample_s, max_n)
            for case in cases
            if case.name not in chosen
        }
        if same_n and calibrated:
            smallest = min(calibrated.values())
            calibrated = dict.fromkeys(calibrated, smallest)
        chosen.update(calibrated)
        costs: dict[str, list[float]] = {case.name: [] for case in cases}
        order = list(cases)
        for index in range(settings.warmup_rounds + settings.rounds):
            rng.shuffle(order)
            for case in order:
                cost, _ = _timed(case, chosen[case.name])
                if index >= settings.warmup_rounds:
                    costs[case.name].append(cost)
    finally:
        for case in cases:
            case.teardown()
    return Comparison([c.name for c in cases], costs, chosen)


def ratio_row(
    figure: str,
    comparison: Comparison,
    name: str,
    baseline: str,
    *,
    goal: str | None,
    detail: str = "",
) -> Row:
    """A table row for the paired ratio `name / baseline`, judged against `goal` ("<= 1.10")."""
    ratios = comparison.ratios(name, baseline)
    median = statistics.median(ratios)
    costs = (
        f"{_us(comparison.median_cost(name))} vs {_us(comparison.median_cost(baseline))} "
        f"per op, {len(ratios)} rounds"
    )
    return Row(
        figure=figure,
        value=median,
        unit="x",
        low=quantile(ratios, 0.1),
        high=quantile(ratios, 0.9),
        goal=goal,
        met=judge(median, goal),
        detail=f"{costs}; {detail}" if detail else costs,
        extra={
            "ratios": ratios,
            "cost_s": comparison.costs[name],
            "baseline_cost_s": comparison.costs[baseline],
            "ops_per_sample": comparison.sizes[name],
        },
    )


def judge(value: float, goal: str | None) -> bool | None:
    """Whether `value` meets a goal written as `<= 1.10`, `>= 0.90` or `<= 2.5 s`."""
    if goal is None:
        return None
    op, threshold = goal.split()[:2]
    limit = float(threshold)
    if op == "<=":
        return value <= limit
    if op == ">=":
        return value >= limit
    raise ValueError(f"goal {goal!r} is neither '<= x' nor '>= x'")


def _us(seconds: float) -> str:
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.2f} us"


def format_value(row: Row) -> str:
    """A value with as many digits as its unit deserves."""
    if row.value != row.value:  # NaN: the figure failed
        return "-"
    if row.unit == "x":
        return f"{row.value:.2f} x"
    if row.unit == "s":
        return f"{row.value:.3f} s"
    if row.unit == "MB":
        return f"{row.value:.1f} MB"
    return f"{row.value:,.0f} {row.unit}".strip()


def format_table(rows: Sequence[Row]) -> str:
    """The results as a Markdown table (it reads the same in a terminal)."""
    header = ("figure", "value", "spread p10-p90", "goal", "met", "detail")
    lines = [header]
    for row in rows:
        spread = "" if row.low is None or row.high is None else f"{row.low:.3g} - {row.high:.3g}"
        met = {True: "yes", False: "NO", None: "-"}[row.met]
        lines.append((row.figure, format_value(row), spread, row.goal or "-", met, row.detail))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for number, line in enumerate(lines):
        out.append("| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |")
        if number == 0:
            out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)
