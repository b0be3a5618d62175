"""Pipeline configuration: stage order, closed stages, probabilities, stall thresholds.

Loaded once at start from TOML (``streams/default_pipelines.toml`` unless the settings
name another file) and passed down explicitly.  Stage *order* is what makes conversion
and regression meaningful: a move to a stage with a higher rank is progress (skipped
stages count as passed through), a move to a lower rank is a regression.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

DEFAULT_PIPELINES_FILE = Path(__file__).with_name("default_pipelines.toml")
DEFAULT_RATES_FILE = Path(__file__).with_name("default_rates.toml")
UNKNOWN_STAGE_RULES = ("accept", "dead-letter")


class ConfigError(ValueError):
    """A configuration file is missing, malformed or inconsistent."""


@dataclass(frozen=True, slots=True)
class Stage:
    id: str
    probability: float
    stalled_after_days: float | None = None


@dataclass(frozen=True, slots=True)
class Pipeline:
    """One pipeline: open stages in order, then its won and lost stages."""

    id: str
    stages: tuple[Stage, ...]
    won_stage: str
    lost_stage: str

    @property
    def open_stage_ids(self) -> tuple[str, ...]:
        return tuple(s.id for s in self.stages)

    def rank(self, stage: str) -> int | None:
        """Position of an open stage (0-based); won ranks after every open stage; lost and
        unknown stages have no rank (they are not on the path to won)."""
        for i, s in enumerate(self.stages):
            if s.id == stage:
                return i
        if stage == self.won_stage:
            return len(self.stages)
        return None

    def stage(self, stage_id: str) -> Stage | None:
        for s in self.stages:
            if s.id == stage_id:
                return s
        return None


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    pipelines: dict[str, Pipeline]
    unknown_stages: str = "accept"

    def get(self, pipeline_id: str) -> Pipeline | None:
        return self.pipelines.get(pipeline_id)

    def knows(self, pipeline_id: str, stage: str) -> tuple[bool, bool]:
        """(pipeline known, stage known in it)."""
        p = self.pipelines.get(pipeline_id)
        if p is None:
            return False, False
        return True, stage in p.open_stage_ids or stage in (p.won_stage, p.lost_stage)


@dataclass(frozen=True, slots=True)
class Rates:
    """Currency conversion into the reporting currency, in integer minor units."""

    reporting_currency: str
    rates: dict[str, Decimal]

    def to_reporting_cents(self, amount: Decimal, currency: str) -> int | None:
        """Amount converted and rounded half-even to the reporting currency's cents; None
        when the currency has no rate (the caller decides how to report that)."""
        rate = self.rates.get(currency)
        if rate is None:
            return None
        return int((amount * rate * 100).to_integral_value())


def _read_toml(path: Path) -> dict:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: file not found") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc


def load_pipelines(path: Path | str = DEFAULT_PIPELINES_FILE) -> PipelineConfig:
    path = Path(path)
    doc = _read_toml(path)
    rule = doc.get("unknown_stages", "accept")
    if rule not in UNKNOWN_STAGE_RULES:
        raise ConfigError(f"{path}: unknown_stages must be one of {UNKNOWN_STAGE_RULES}, got {rule!r}")
    pipelines: dict[str, Pipeline] = {}
    for i, raw in enumerate(doc.get("pipeline", [])):
        try:
            stages = tuple(
                Stage(
                    id=str(s["id"]),
                    probability=float(s.get("probability", 0.0)),
                    stalled_after_days=(
                        float(s["stalled_after_days"]) if s.get("stalled_after_days") is not None else None
                    ),
                )
                for s in raw["stages"]
            )
            p = Pipeline(
                id=str(raw["id"]),
                stages=stages,
                won_stage=str(raw["won_stage"]),
                lost_stage=str(raw["lost_stage"]),
            )
        except KeyError as exc:
            raise ConfigError(f"{path}: pipeline #{i + 1} lacks {exc.args[0]!r}") from exc
        ids = [s.id for s in stages] + [p.won_stage, p.lost_stage]
        if len(set(ids)) != len(ids):
            raise ConfigError(f"{path}: pipeline {p.id!r} names a stage twice")
        for s in stages:
            if not 0.0 <= s.probability <= 1.0:
                raise ConfigError(f"{path}: pipeline {p.id!r} stage {s.id!r}: probability must be in 0..1")
            if s.stalled_after_days is not None and s.stalled_after_days <= 0:
                raise ConfigError(f"{path}: pipeline {p.id!r} stage {s.id!r}: stalled_after_days must be > 0")
        if p.id in pipelines:
            raise ConfigError(f"{path}: pipeline {p.id!r} defined twice")
        pipelines[p.id] = p
    if not pipelines:
        raise ConfigError(f"{path}: no [[pipeline]] defined")
    return PipelineConfig(pipelines=pipelines, unknown_stages=rule)


def load_rates(path: Path | str = DEFAULT_RATES_FILE) -> Rates:
    path = Path(path)
    doc = _read_toml(path)
    try:
        reporting = str(doc["reporting_currency"])
        rates = {str(k): Decimal(str(v)) for k, v in doc["rates"].items()}
    except KeyError as exc:
        raise ConfigError(f"{path}: lacks {exc.args[0]!r}") from exc
    if rates.get(reporting) != Decimal(1):
        raise ConfigError(f"{path}: the reporting currency {reporting} must have rate 1")
    return Rates(reporting_currency=reporting, rates=rates)
