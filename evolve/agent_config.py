"""The agent's settings and what it says about a generation.

``AgentConfig`` is how the agent screens and learns (k, the explore share, features), a
frozen dataclass that round-trips through JSON. ``Prediction`` is its view of one generation,
one entry per position, as stored in a snapshot's ``settings["agent"]`` (``to_record``) and
read back (``from_record``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from evolve.agent_features import LAYOUT_GRID
from evolve.screening import MIN_DISTANCE
from evolve.session import SessionError


class AgentError(SessionError):
    """Bad agent settings or request; the message is one line for the user."""


MAX_OFFSPRING_FACTOR = 64


@dataclass(frozen=True)
class AgentConfig:
    """How the agent screens and learns.

    The defaults were tuned with ``bench/steering.py`` and timed with ``bench/agent_cost.py``:
    features of 16 px renders match those of the full pictures closely for CPPN and cost
    less to render than 32 px; genome features add to every candidate's cost and did not
    help steering, so they are off unless asked for; 16 generations of history bound the
    time of a fit (the population moves on, and old comparisons say little about it).

    Attributes:
        offspring_factor: k: children bred per place shown (1 = no screening).
        explore: share of the shown places given to the candidates it is least sure about.
        beta: optimism of the exploit ranking (mean + beta * std).
        min_distance: near-duplicate threshold for screening (feature RMS, in spreads).
        feature_size: edge in pixels of the small renders features are computed from.
        l2: prior precision of the preference model (larger = slower to form opinions).
        history: most recent rated generations the model learns from.
        scope: ``"branch"`` (this branch's line) or ``"run"`` (every branch of the run).
        extractor: image features: ``"stats"`` or ``"clip:/path/to/model"``.
        layout: cells per side of the colour-layout features (0: none).
        genome: use the genome-summary features.
    """

    offspring_factor: int = 4
    explore: float = 0.1
    beta: float = 0.5
    min_distance: float = MIN_DISTANCE
    feature_size: int = 16
    l2: float = 0.3
    history: int = 16
    scope: str = "branch"
    extractor: str = "stats"
    layout: int = LAYOUT_GRID
    genome: bool = False

    def __post_init__(self) -> None:
        k = self.offspring_factor
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_OFFSPRING_FACTOR:
            raise AgentError(
                f"offspring factor k must be a whole number from 1 to {MAX_OFFSPRING_FACTOR}, got {k!r}"
            )
        if not 0.0 <= self.explore <= 1.0:
            raise AgentError(f"explore share must be within 0..1, got {self.explore!r}")
        size = self.feature_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 16 or size % 8:
            raise AgentError(f"feature size must be a multiple of 8 of at least 16, got {size!r}")
        if not self.l2 > 0 or not self.min_distance >= 0:
            raise AgentError("l2 must be positive and min_distance non-negative")
        if isinstance(self.history, bool) or not isinstance(self.history, int) or self.history < 1:
            raise AgentError(f"history must be at least 1 generation, got {self.history!r}")
        if (
            isinstance(self.layout, bool)
            or not isinstance(self.layout, int)
            or not 0 <= self.layout <= 8
        ):
            raise AgentError(
                f"layout must be a whole number of cells from 0 to 8, got {self.layout!r}"
            )
        if self.scope not in ("branch", "run"):
            raise AgentError(f"scope must be 'branch' or 'run', got {self.scope!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AgentConfig:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise AgentError(
                f"unknown agent setting {unknown[0]!r}; known: {', '.join(sorted(known))}"
            )
        return cls(**data)

    def replace(self, **changes: Any) -> AgentConfig:
        return AgentConfig.from_dict({**self.to_dict(), **changes})


@dataclass(frozen=True)
class Prediction:
    """The agent's view of one generation, one entry per position.

    Attributes:
        scores: predicted score 0..5 on the person's own scale (what the UI shows).
        utility: the model's utility (only its order matters; used for agreement).
        std: uncertainty of the utility (the model's Laplace std, utility units).
        comparisons: how many comparisons the model had learned from (0 = no opinion yet).
        recorded: True when read from the snapshot (predicted before it was shown).
    """

    scores: tuple[float, ...]
    utility: tuple[float, ...]
    std: tuple[float, ...]
    comparisons: int
    recorded: bool = False

    def to_record(self, config: AgentConfig) -> dict[str, Any]:
        """The JSON stored in a snapshot's ``settings["agent"]``."""

        def rounded(values: Sequence[float]) -> list[float]:
            return [round(float(v), 4) for v in values]

        return {
            "predicted": rounded(self.scores),
            "utility": rounded(self.utility),
            "std": rounded(self.std),
            "comparisons": self.comparisons,
            "k": config.offspring_factor,
            "explore": config.explore,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Prediction:
        return cls(
            scores=tuple(record["predicted"]),
            utility=tuple(record["utility"]),
            std=tuple(record["std"]),
            comparisons=int(record.get("comparisons", 0)),
            recorded=True,
        )
