"""Gossip tuning profiles.

Rule: every timing and size knob of the gossip core lives in one frozen ``GossipConfig``;
``lan()`` is the fully commented baseline (memberlist's ``DefaultLANConfig``) and the other
profiles are *derived* from it with ``dataclasses.replace`` so a difference is always
visible as an override. Times are seconds (float).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from node.errors import ConfigError

__all__ = ["GossipConfig"]

_HOUR = 3600.0


@dataclass(frozen=True, slots=True, kw_only=True)
class GossipConfig:
    """Timing, fan-out and size limits of one gossip pool (LAN defaults)."""

    # Time between failure-detection probes; scaled by the local health multiplier.
    probe_interval: float = 1.0
    # How long to wait for a direct ack before asking peers; ~99th percentile RTT.
    probe_timeout: float = 0.5
    # Peers asked to ping a target that did not answer us directly.
    indirect_checks: int = 3
    # A broadcast is sent retransmit_mult * ceil(log10(n + 1)) times.
    retransmit_mult: int = 4
    # Suspicion min timeout = suspicion_mult * max(1, log10 n) * probe_interval.
    suspicion_mult: int = 4
    # Suspicion starts at this multiple of the min and shrinks with confirmations.
    suspicion_max_timeout_mult: int = 6
    # Full-state TCP sync with one random peer; scaled up for clusters above 32 nodes.
    push_pull_interval: float = 30.0
    # Dedicated gossip rounds for queued broadcasts, decoupled from probing.
    gossip_interval: float = 0.2
    # Random peers each gossip round is sent to.
    gossip_nodes: int = 3
    # Keep gossiping to a dead node this long so it can learn it was declared dead.
    gossip_to_the_dead_time: float = 30.0
    # Local health multiplier cap: the probe interval backs off up to this factor.
    awareness_max_multiplier: int = 8
    # A dead node's name may be taken by a new address after this long; 0 = never.
    dead_node_reclaim_time: float = 0.0
    # Dead members are forgotten after this long (Consul: 72 h, must be >= 8 h in the agent).
    reconnect_timeout: float = 72 * _HOUR
    # Members that left gracefully are forgotten after this long (Serf TombstoneTimeout).
    tombstone_timeout: float = 24 * _HOUR
    # How often to try a push-pull with one failed member, with probability
    # failed/alive (Serf ReconnectInterval): this is what heals a partition.
    reconnect_interval: float = 30.0
    # How often the reaper looks for dead/left members past their timeout (Serf ReapInterval).
    reap_interval: float = 15.0
    # Largest UDP payload we build (before encryption overhead, which the driver adds).
    udp_buffer_size: int = 1400
    # Bytes the driver adds to each packet (encryption: 29; label); subtracted from the budget.
    packet_overhead: int = 0
    # Connect + request + reply deadline for TCP streams (push-pull, TCP ping).
    tcp_timeout: float = 10.0
    # Skip the TCP fallback ping when UDP probes fail.
    disable_tcp_pings: bool = False

    def __post_init__(self) -> None:
        positive = ("probe_interval", "probe_timeout", "push_pull_interval", "gossip_interval")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"must be > 0, got {getattr(self, name)!r}", key=name)
        if self.probe_timeout > self.probe_interval:
            raise ConfigError("probe_timeout must not exceed probe_interval", key="probe_timeout")
        if self.udp_buffer_size - self.packet_overhead < 512:
            raise ConfigError(
                "udp_buffer_size - packet_overhead must be >= 512", key="udp_buffer_size"
            )
        for name in ("indirect_checks", "retransmit_mult", "gossip_nodes"):
            if getattr(self, name) < 0:
                raise ConfigError(f"must be >= 0, got {getattr(self, name)!r}", key=name)
        if self.suspicion_mult < 1 or self.suspicion_max_timeout_mult < 1:
            raise ConfigError("suspicion multipliers must be >= 1", key="suspicion_mult")
        if self.awareness_max_multiplier < 1:
            raise ConfigError("must be >= 1", key="awareness_max_multiplier")

    @classmethod
    def lan(cls) -> GossipConfig:
        """memberlist's DefaultLANConfig: a single low-latency network."""
        return cls()

    @classmethod
    def wan(cls) -> GossipConfig:
        """memberlist's DefaultWANConfig: servers across datacenters, high latency."""
        return dataclasses.replace(
            cls.lan(),
            tcp_timeout=30.0,
            suspicion_mult=6,
            push_pull_interval=60.0,
            probe_timeout=3.0,
            probe_interval=5.0,
            gossip_nodes=4,
            gossip_interval=0.5,
            gossip_to_the_dead_time=60.0,
        )

    @classmethod
    def local(cls) -> GossipConfig:
        """memberlist's DefaultLocalConfig: loopback / tests, fast and less redundant."""
        return dataclasses.replace(
            cls.lan(),
            tcp_timeout=1.0,
            indirect_checks=1,
            retransmit_mult=2,
            suspicion_mult=3,
            push_pull_interval=15.0,
            probe_timeout=0.2,
            probe_interval=1.0,
            gossip_interval=0.1,
            gossip_to_the_dead_time=15.0,
        )

    @property
    def packet_budget(self) -> int:
        """Bytes available for our own payload in one UDP packet."""
        return self.udp_buffer_size - self.packet_overhead
