"""node.testing: fake time, an in-memory network model and a cluster simulator.

Used by tests and benchmarks only; nothing in ``node`` proper imports it.
"""

from node.testing.clock import FakeClock
from node.testing.network import LinkConditions, MemoryNetwork
from node.testing.sim import ClusterSim, SimNode

__all__ = ["ClusterSim", "FakeClock", "LinkConditions", "MemoryNetwork", "SimNode"]
