"""Local Alpaca paper-broker simulator: REST ``/v2``, the ``/stream`` websocket and fault switches.

Run ``python -m simulator --config accounts.json``; see README.md. For tests use
``simulator.testing.RunningSimulator``.
"""

from .config import AccountConfig, SimConfig, load_config
from .server import Simulator

__all__ = ["AccountConfig", "SimConfig", "Simulator", "load_config"]
