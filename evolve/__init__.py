"""The GA side: engine (ask/tell on DEAP), fitness, the session loop and the agent.

The GA and the generators meet only here, through ``imagery.protocol.Generator``.
"""

from __future__ import annotations

from evolve.engine import Candidate, Engine, EngineError, EngineSettings

__all__ = ["Candidate", "Engine", "EngineError", "EngineSettings"]
