"""The plugin contract: typed parameters, the features it needs, one pure `evaluate`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar, Generic, TypeVar, cast

from pydantic import BaseModel, ConfigDict, ValidationError

from streams.domain.strategy.features import PRICE, Features
from streams.domain.strategy.model import Proposal


class PluginParams(BaseModel):
    """Base of every plugin's parameters: unknown keys are configuration errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


P = TypeVar("P", bound=PluginParams)


class PluginConfigError(ValueError):
    pass


class StrategyPlugin(ABC, Generic[P]):
    """A strategy: resolved by (`strategy_type`, `version`), configured once, then pure."""

    strategy_type: ClassVar[str]
    version: ClassVar[str]
    description: ClassVar[str]
    params_model: ClassVar[type[PluginParams]]

    def __init__(self, params: P) -> None:
        self.params = params

    @classmethod
    def configure(cls, raw: Mapping[str, Any]) -> StrategyPlugin[Any]:
        try:
            params = cls.params_model.model_validate(dict(raw))
        except ValidationError as exc:
            raise PluginConfigError(f"params: {describe(exc)}") from None
        return cls(cast(Any, params))

    @property
    def required_features(self) -> frozenset[str]:
        """Features without which the plugin must not run; a sizing price is always needed."""
        return frozenset({PRICE}) | self._required_features()

    @abstractmethod
    def _required_features(self) -> frozenset[str]: ...

    @abstractmethod
    def evaluate(self, features: Features) -> Proposal | None:
        """A proposal, or None for no opinion. Must not do I/O; may raise (it is isolated)."""


def describe(exc: ValidationError) -> str:
    """`field: problem; ...` without input values or documentation links."""
    errors = exc.errors(include_url=False, include_input=False)
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'params'}: {e['msg']}" for e in errors)


def clamp(value: float, low: float = 0.0, high: float = 1.0) -> float:
    return max(low, min(high, value))


def ramp(value: float, start: float, full: float) -> float:
    """0 at `start`, 1 at `full` and beyond, linear in between."""
    if full <= start:
        return 1.0 if value >= start else 0.0
    return clamp((value - start) / (full - start))
