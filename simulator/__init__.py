"""A simulator of the CallPassword API: the stand-in the tests, benchmarks and demo talk to.

It follows ``docs/callpass-api.md`` (every method, envelope and error), keeps calls that
live in time, and counts start requests per number and per request id so tests can prove that
nobody was called twice. Run it with ``callpass simulator`` or ``python -m simulator``.
"""

from simulator.calls import CallBook, MixEntry, parse_mix
from simulator.faults import FaultConfig
from simulator.server import SimulatorConfig, build_app

__all__ = ["CallBook", "FaultConfig", "MixEntry", "SimulatorConfig", "build_app", "parse_mix"]
