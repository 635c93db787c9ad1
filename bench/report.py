"""Figures, their ratios to a baseline from the same run, and how they are shown and saved.

A figure alone says little on an unknown machine; its ratio to a baseline measured a moment before
on the same machine (the same server's ``/healthz``, the raw argon2 ceiling) is what can be compared
between runs and machines. A target is a line to read the ratio against, never a reason to fail.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from rich.console import Console
from rich.table import Table


@dataclass(frozen=True, slots=True)
class Target:
    """A line to read a figure's ratio (or, for absolute targets, its value) against."""

    op: Literal[">=", "<"]
    threshold: float
    applies_to: Literal["ratio", "value"] = "ratio"

    def holds(self, x: float) -> bool:
        return x >= self.threshold if self.op == ">=" else x < self.threshold

    def as_dict(self) -> dict[str, Any]:
        return {"op": self.op, "threshold": self.threshold, "applies_to": self.applies_to}

    def describe(self, unit: str) -> str:
        op = "≥" if self.op == ">=" else "<"
        return f"ratio {op} {self.threshold:g}" if self.applies_to == "ratio" else f"{op} {self.threshold:g} {unit}"


@dataclass(slots=True)
class Figure:
    """One measured number, optionally read as a ratio to a baseline figure of the same run."""

    key: str
    label: str
    value: float
    unit: str
    baseline: Figure | None = None
    target: Target | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or not self.baseline.value or math.isnan(self.baseline.value):
            return None
        return self.value / self.baseline.value

    @property
    def meets(self) -> bool | None:
        """Whether the target holds; ``None`` without a target or without the number it applies to."""
        if self.target is None:
            return None
        x = self.ratio if self.target.applies_to == "ratio" else self.value
        return None if x is None or math.isnan(x) else self.target.holds(x)

    def as_dict(self) -> dict[str, Any]:
        ratio = self.ratio
        return {
            "label": self.label,
            "value": _round(self.value),
            "unit": self.unit,
            "baseline": self.baseline.key if self.baseline else None,
            "ratio": None if ratio is None else round(ratio, 3),
            "target": None if self.target is None else self.target.as_dict(),
            "meets_target": self.meets,
            "note": self.note,
        }


def _round(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 3)


def _number(value: float, unit: str) -> str:
    if math.isnan(value):
        return "n/a"
    digits = 0 if abs(value) >= 100 else 1 if abs(value) >= 10 else 2
    return f"{value:,.{digits}f} {unit}"


@dataclass(slots=True)
class Report:
    """Everything one run of a suite found, printable as a table and savable as JSON."""

    suite: str
    duration: float
    machine: dict[str, Any] = field(default_factory=dict)
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    # CPUs' worth of other processes' work during each measurement (see ``bench.machine.CpuWatch``).
    background: dict[str, float] = field(default_factory=dict)
    background_threshold: float = 0.25

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        return figure

    def table(self) -> Table:
        table = Table(title=f"Tenantry {self.suite} benchmarks ({self.duration:g} s per measurement)")
        for column in ("Measurement", "Result", "Ratio", "Baseline", "Target", "Verdict", "Notes"):
            table.add_column(column, justify="right" if column in ("Result", "Ratio") else "left")
        for figure in self.figures:
            ratio = figure.ratio
            table.add_row(
                figure.label,
                _number(figure.value, figure.unit),
                "" if ratio is None else f"{ratio:.2f}x",
                figure.baseline.label if figure.baseline else "",
                figure.target.describe(figure.unit) if figure.target else "",
                {True: "[green]meets[/green]", False: "[yellow]misses[/yellow]", None: ""}[figure.meets],
                f"[dim]{figure.note}[/dim]",
            )
        return table

    def busy_note(self) -> str | None:
        """A warning naming the measurements that shared the machine with other work, if any did."""
        busy = {name: cpus for name, cpus in self.background.items() if cpus >= self.background_threshold}
        if not busy:
            return None
        listed = ", ".join(f"{name} ({cpus:.1f})" for name, cpus in busy.items())
        return f"Other processes used CPUs during: {listed}. Those figures are low and noisy; rerun on a quiet machine."

    def print(self, console: Console) -> None:
        console.print(self.table())
        busy = self.busy_note()
        for note in [*self.notes, *([busy] if busy else [])]:
            console.print(f"• {note}", highlight=False)
        for name, error in self.errors.items():
            console.print(f"[red]{name} did not run to the end:[/red] {error}", markup=True, highlight=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "duration_s": self.duration,
            "machine": self.machine,
            "figures": {figure.key: figure.as_dict() for figure in self.figures},
            "notes": self.notes,
            "background_cpus": {name: round(cpus, 2) for name, cpus in self.background.items()},
            "details": self.details,
            "errors": self.errors,
        }

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.as_dict(), indent=2) + "\n")
