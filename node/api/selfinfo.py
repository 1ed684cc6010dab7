"""``/v1/agent/self``: what this node is, in Consul's ``Config``/``DebugConfig``/
``Member``/``Meta``/``Stats``/``xDS`` shape.

Rule: every value is read from the node at request time (config, local state, gossip
members, the Raft group) and says what is true here; nothing is a constant standing in
for Consul's. ``Stats`` values are strings, as in Consul. ``DebugConfig`` is the whole
configuration keyed by Consul's RuntimeConfig field names, and every string under a key
that names a key, token or secret (the gossip key, CA private keys, ACL tokens) reads
``"hidden"`` (Consul's redaction). meshnode runs its own proxies and no xDS server, so
``xDS`` reports no supported Envoy versions and no port (``-1``).
"""

from __future__ import annotations

import asyncio
import os
import platform
import sys
from collections.abc import Mapping
from typing import Any

from node import __version__
from node.api import codec
from node.api.state import AgentAPI
from node.catalog.values import CheckKind
from node.frozen import thaw

__all__ = ["encode_self", "stats", "debug_config", "redact"]

HIDDEN = "hidden"
_SECRET_WORDS = ("key", "token", "secret")
_GO_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}


def redact(value: Any, key: str = "") -> Any:
    """``value`` with every non-empty string under a secret-sounding key as ``"hidden"``."""
    if isinstance(value, Mapping):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v, key) for v in value]
    if isinstance(value, str) and value and any(w in key.lower() for w in _SECRET_WORDS):
        return HIDDEN
    return value


def _b(flag: bool) -> str:
    return "true" if flag else "false"


def _rpc_address(agent: AgentAPI) -> str:
    port = agent.bound.get("server", ("", agent.config.ports.server))[1]
    return f"{agent.local.identity.address}:{port}"


def _consul_stats(agent: AgentAPI) -> dict[str, str]:
    acl = getattr(agent.config, "acl", None)
    out = {
        "server": _b(agent.is_server),
        "acl": "enabled" if getattr(acl, "enabled", False) else "disabled",
    }
    if not agent.is_server:
        out["known_servers"] = str(len(agent.peers()))
        return out
    leader = agent.leader()
    out.update(
        leader=_b(bool(leader) and leader == _rpc_address(agent)),
        leader_addr=leader,
        bootstrap=_b(agent.config.bootstrap_expect == 1),
        known_datacenters=str(len(agent.datacenters())),
    )
    return out


def _raft_stats(agent: AgentAPI) -> dict[str, str] | None:
    group = agent.connect.group
    if group is None:
        return None
    leader, voters = group.leader(), group.voters()
    contact = group.last_contact()
    state = "Leader" if leader is not None and leader == group.address else "Follower"
    return {
        "state": state,
        "commit_index": str(group.commit_index),
        "applied_index": str(group.commit_index),
        "num_peers": str(max(len(voters) - 1, 0)),
        "last_contact": "never" if contact is None else f"{contact * 1000:.0f}ms",
        "latest_configuration": "["
        + ", ".join(f"{{Suffrage:Voter Address:{v}}}" for v in voters)
        + "]",
    }


def _serf_stats(agent: AgentAPI, *, wan: bool) -> dict[str, str]:
    members = agent.members(wan=wan)
    return {
        "members": str(len(members)),
        "failed": str(sum(1 for m in members if m["status"] == 4)),
        "left": str(sum(1 for m in members if m["status"] == 3)),
        "encrypted": _b(agent.config.encrypt is not None),
    }


def stats(agent: AgentAPI) -> dict[str, dict[str, str]]:
    """Consul's ``Stats``: agent, build, runtime, consul, serf and (servers) raft."""
    checks = agent.local.checks().values()
    try:
        tasks = len(asyncio.all_tasks())
    except RuntimeError:
        tasks = 0
    out = {
        "agent": {
            "check_monitors": str(sum(1 for c in checks if c.kind is CheckKind.SCRIPT)),
            "check_ttls": str(sum(1 for c in checks if c.kind is CheckKind.TTL)),
            "checks": str(len(checks)),
            "services": str(len(agent.local.services())),
        },
        "build": {"prerelease": "", "revision": "meshnode", "version": __version__},
        "runtime": {
            "os": sys.platform,
            "arch": _GO_ARCH.get(platform.machine(), platform.machine()),
            "version": f"python{platform.python_version()}",
            "max_procs": str(os.cpu_count() or 1),
            "cpu_count": str(os.cpu_count() or 1),
            "goroutines": str(tasks),
        },
        "consul": _consul_stats(agent),
        "serf_lan": _serf_stats(agent, wan=False),
    }
    if agent.is_server:
        out["serf_wan"] = _serf_stats(agent, wan=True)
        raft = _raft_stats(agent)
        if raft is not None:
            out["raft"] = raft
    return out


def _addr(host: str, port: int) -> str:
    return f"tcp://{host}:{port}"


def debug_config(agent: AgentAPI) -> dict[str, Any]:
    """The whole configuration under Consul's RuntimeConfig names, secrets hidden."""
    c = agent.config
    http_port = agent.bound.get("http", ("", c.ports.http))[1]
    raw: dict[str, Any] = {
        "Datacenter": c.datacenter,
        "PrimaryDatacenter": c.primary_datacenter,
        "NodeName": c.node_name,
        "NodeID": agent.node_id,
        "DataDir": c.data_dir or "",
        "DevMode": c.dev,
        "ServerMode": c.server,
        "BootstrapExpect": c.bootstrap_expect,
        "BindAddr": c.bind_addr,
        "AdvertiseAddrLAN": c.advertise_addr,
        "AdvertiseAddrWAN": c.advertise_addr_wan,
        "ClientAddrs": [c.client_addr],
        "HTTPAddrs": [_addr(c.client_addr, http_port)],
        "HTTPPort": http_port,
        "HTTPSPort": c.ports.https,
        "GRPCPort": c.ports.grpc,
        "SerfPortLAN": agent.bound.get("serf_lan", ("", c.ports.serf_lan))[1],
        "SerfPortWAN": agent.bound.get("serf_wan", ("", c.ports.serf_wan))[1],
        "ServerPort": agent.bound.get("server", ("", c.ports.server))[1],
        "ConnectSidecarMinPort": c.ports.sidecar_min_port,
        "ConnectSidecarMaxPort": c.ports.sidecar_max_port,
        "RetryJoinLAN": list(c.retry_join),
        "RetryJoinWAN": list(c.retry_join_wan),
        "RetryJoinIntervalLAN": f"{c.retry_interval:g}s",
        "RetryJoinIntervalWAN": f"{c.retry_interval_wan:g}s",
        "ReconnectTimeoutLAN": f"{c.reconnect_timeout:g}s",
        "ReconnectTimeoutWAN": f"{c.reconnect_timeout_wan:g}s",
        "EncryptKey": c.encrypt or "",
        "EncryptVerifyIncoming": c.encrypt_verify_incoming,
        "EncryptVerifyOutgoing": c.encrypt_verify_outgoing,
        "ConnectEnabled": c.connect.enabled,
        "ConnectCAProvider": c.connect.ca_provider,
        "ConnectCAConfig": thaw(c.connect.ca_config),
        "DefaultIntentionPolicy": str(c.connect.default_intention_policy),
        "EnableCentralServiceConfig": c.enable_central_service_config,
        "EnableRemoteScriptChecks": c.enable_script_checks,
        "EnableLocalScriptChecks": c.enable_local_script_checks,
        "LeaveOnTerm": c.leave_on_terminate,
        "LogLevel": c.log_level,
        "Telemetry": {
            "DisableHostname": c.telemetry.disable_hostname,
            "MetricsPrefix": c.telemetry.metrics_prefix,
            "PrometheusRetentionTime": f"{c.telemetry.prometheus_retention_time:g}s",
        },
        "Services": [codec.encode_agent_service(s.instance()) for s in c.services],
        "ConfigFiles": list(c.sources),
    }
    redacted: dict[str, Any] = redact(raw)
    return redacted


def encode_self(agent: AgentAPI, member: Mapping[str, Any]) -> dict[str, Any]:
    """The whole ``/v1/agent/self`` answer."""
    c = agent.config
    return {
        "Config": {
            "Datacenter": c.datacenter,
            "PrimaryDatacenter": c.primary_datacenter,
            "NodeName": c.node_name,
            "NodeID": agent.node_id,
            "Server": c.server,
            "Revision": "meshnode",
            "Version": __version__,
        },
        "DebugConfig": debug_config(agent),
        "Coord": None,
        "Member": codec.encode_member(member),
        "Meta": {**agent.local.identity.meta, "consul-network-segment": ""},
        "Stats": stats(agent),
        "xDS": {
            "SupportedProxies": {"envoy": []},
            "Port": -1,
            "Ports": {"Plaintext": -1, "TLS": -1},
        },
    }
