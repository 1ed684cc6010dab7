"""The cluster as this node sees it: members, servers, leader, datacenters; join
addresses and keyring reports.

Rule: pure views over gossip membership and the configuration; no I/O. Before the pools
run (``ClusterView`` with no pools yet), the node describes itself from its
configuration alone. The leader is a stand-in (there is no raft): the alive server of
the datacenter with the smallest name, which every member derives the same from the
same membership. A client is in no WAN pool: it learns the datacenters from a server
(``set_remote_datacenters``).
Member status follows serf's numbering as /v1/agent/members encodes it (1 alive,
2 leaving, 3 left, 4 failed); a *suspect* member is still alive to serf. The gossip tag
``role = "server"`` (what ``node.rpc.routing`` routes on) is shown as Consul's
``"consul"`` so Consul tooling recognises servers.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Protocol

from node import __version__
from node.errors import InvalidRequest
from node.gossip.messages import Address, MemberStatus
from node.gossip.state import Member
from node.rpc.routing import (
    RAFT_TAG,
    ROLE_NODE,
    ROLE_SERVER,
    TAG_DC,
    TAG_ROLE,
    raft_port,
    rpc_address,
)

if TYPE_CHECKING:
    from node.config.agent import AgentConfig

__all__ = [
    "SERF_STATUS",
    "SHOWN_TAGS",
    "MemberSource",
    "Pools",
    "ClusterView",
    "advertise_address",
    "member_tags",
    "member_view",
    "parse_join_addr",
    "KeyringPoolReport",
    "keyring_reports",
]

RaftStatus = tuple[str, tuple[str, ...]]
"""(leader, voters) of a Raft group."""

#: serf.MemberStatus values (StatusNone 0, Alive 1, Leaving 2, Left 3, Failed 4).
SERF_STATUS: Final = MappingProxyType(
    {
        MemberStatus.ALIVE: 1,
        MemberStatus.SUSPECT: 1,
        MemberStatus.LEFT: 3,
        MemberStatus.DEAD: 4,
    }
)
CONSUL_SERVER_ROLE = "consul"
#: Extra member tags shown by /v1/agent/members (not gossiped: they never change).
SHOWN_TAGS: Final = MappingProxyType({"vsn": "2", "segment": ""})


class MemberSource(Protocol):
    """A running gossip pool, as far as the view reads it."""

    def members(self) -> Sequence[Member]:
        """Every member this pool knows, this node included."""
        ...


class Pools(Protocol):
    """The node's gossip pools; ``None`` until bound (``wan`` stays ``None`` on clients)."""

    @property
    def lan(self) -> MemberSource | None:
        """The LAN pool."""
        ...

    @property
    def wan(self) -> MemberSource | None:
        """The WAN pool (servers only)."""
        ...


def advertise_address(config: AgentConfig) -> str:
    """The address other nodes should use for us (config resolves advertise vs bind)."""
    return config.advertise_addr


def member_tags(config: AgentConfig, node_id: str, rpc_port: int) -> dict[str, str]:
    """Gossip tags of this node (LAN and WAN alike): what routing and members() read."""
    tags = {
        "dc": config.datacenter,
        "role": ROLE_SERVER if config.server else ROLE_NODE,
        "port": str(rpc_port),
        "id": node_id,
        "build": __version__,
    }
    if config.server and not config.dev and config.bootstrap_expect > 1:
        tags[RAFT_TAG] = f"{advertise_address(config)}:{raft_port(rpc_port)}"
    return tags


class ClusterView:
    """Members, servers, leader and datacenters, read from the pools when they run."""

    __slots__ = ("_config", "_node_id", "_pools", "_remote_dcs", "_raft", "_remote_raft")

    def __init__(self, config: AgentConfig, node_id: str, pools: Pools) -> None:
        self._config = config
        self._node_id = node_id
        self._pools = pools
        self._remote_dcs: tuple[str, ...] = ()  # a client's datacenters, as a server said
        self._raft: Callable[[], RaftStatus | None] = lambda: None
        self._remote_raft: tuple[str, tuple[str, ...]] = ("", ())  # as a server said

    def members(self, *, wan: bool = False) -> list[dict[str, Any]]:
        """Gossip members as /v1/agent/members shows them, this node first."""
        pool = self._pools.wan if wan else self._pools.lan
        if pool is None:
            return self._config_members(wan=wan)
        own = self._own_name(wan=wan)
        ordered = sorted(pool.members(), key=lambda m: (m.name != own, m.name))
        return [member_view(m, SHOWN_TAGS) for m in ordered]

    def alive_servers(self) -> list[Member]:
        """This datacenter's alive (or suspect) servers, by name."""
        lan = self._pools.lan
        if lan is None:
            return []
        dc = self._config.datacenter
        return sorted(
            (m for m in lan.members() if m.tags.get(TAG_ROLE) == ROLE_SERVER
             and m.tags.get(TAG_DC) == dc and m.status in (MemberStatus.ALIVE, MemberStatus.SUSPECT)),
            key=lambda m: m.name,
        )  # fmt: skip

    def leader(self) -> str:
        """RPC address of the datacenter's leader, ``""`` if none is known.

        Where the servers run a Raft group of several voters (the primary's, announced
        by their ``raft`` tag), the group's leader; elsewhere the alive server with the
        smallest name (a group of one, or a datacenter that runs none).
        """
        raft = self.raft_status()
        if raft is not None:
            return raft[0]
        if self._pools.lan is None:
            return self._config_leader()
        for m in self.alive_servers():
            addr = rpc_address(m)
            if addr is not None:
                return f"{addr[0]}:{addr[1]}"
        return ""

    def peers(self) -> list[str]:
        """RPC addresses of the datacenter's Raft voters (else of its alive servers)."""
        raft = self.raft_status()
        if raft is not None:
            return list(raft[1])
        if self._pools.lan is None:
            leader = self._config_leader()
            return [leader] if leader else []
        addrs = (rpc_address(m) for m in self.alive_servers())
        return [f"{a[0]}:{a[1]}" for a in addrs if a]

    def datacenters(self) -> list[str]:
        """Known datacenters, ours first then by name (no RTT estimates to sort by)."""
        own = self._config.datacenter
        wan = self._pools.wan
        if wan is not None:
            dcs = {
                m.tags.get(TAG_DC, "") for m in wan.members() if m.status is not MemberStatus.LEFT
            }
        else:
            dcs = set(self._remote_dcs)
        dcs.discard("")
        dcs.discard(own)
        return [own, *sorted(dcs)]

    def runs_raft(self) -> bool:
        """Whether this datacenter's servers run a Raft group of several voters."""
        if self._config.datacenter != self._config.primary_datacenter:
            return False
        return any(RAFT_TAG in m.tags for m in self.alive_servers())

    def raft_status(self) -> tuple[str, tuple[str, ...]] | None:
        """(leader, voters) as RPC addresses where a Raft group runs, else ``None``."""
        if not self.runs_raft():
            return None
        own = self._raft()
        if own is None:
            return self._remote_raft
        by_raft = {m.tags[RAFT_TAG]: rpc_address(m) for m in self.alive_servers()
                   if RAFT_TAG in m.tags}  # fmt: skip

        def rpc(raft_addr: str) -> str:
            addr = by_raft.get(raft_addr)
            return raft_addr if addr is None else f"{addr[0]}:{addr[1]}"

        leader, voters = own
        return (rpc(leader) if leader else ""), tuple(rpc(v) for v in voters)

    def set_raft(self, status: Callable[[], RaftStatus | None]) -> None:
        """Where this server's own Raft group answers from (leader, voters' Raft addresses)."""
        self._raft = status

    def set_remote_raft(self, leader: str, peers: Sequence[str]) -> bool:
        """A server's answer of leader and voters (for a client); whether it changed."""
        new = (leader, tuple(peers))
        changed, self._remote_raft = new != self._remote_raft, new
        return changed

    def set_remote_datacenters(self, dcs: Sequence[str]) -> bool:
        """A server's list of datacenters (for a client); whether it changed."""
        new = tuple(dcs)
        changed, self._remote_dcs = new != self._remote_dcs, new
        return changed

    def _own_name(self, *, wan: bool) -> str:
        cfg = self._config
        return f"{cfg.node_name}.{cfg.datacenter}" if wan else cfg.node_name

    def _config_members(self, *, wan: bool) -> list[dict[str, Any]]:
        cfg = self._config
        if wan and not cfg.server:
            return []
        port = cfg.ports.serf_wan if wan else cfg.ports.serf_lan
        addr = (cfg.advertise_addr_wan or advertise_address(cfg)) if wan else advertise_address(cfg)
        tags = member_tags(cfg, self._node_id, cfg.ports.server)
        me = Member(name=self._own_name(wan=wan), addr=(addr, port), tags=tags, incarnation=0,
                    status=MemberStatus.ALIVE, status_since=0.0)  # fmt: skip
        return [member_view(me, SHOWN_TAGS)]

    def _config_leader(self) -> str:
        if not self._config.server:
            return ""
        return f"{advertise_address(self._config)}:{self._config.ports.server}"


def member_view(member: Member, extra_tags: Mapping[str, str]) -> dict[str, Any]:
    """``{name, addr, port, tags, status}`` of one gossip member, as the API shows it."""
    tags = dict(extra_tags)
    tags.update(member.tags)
    if tags.get(TAG_ROLE) == ROLE_SERVER:
        tags[TAG_ROLE] = CONSUL_SERVER_ROLE
    return {
        "name": member.name,
        "addr": member.addr[0],
        "port": member.addr[1],
        "tags": tags,
        "status": SERF_STATUS.get(member.status, 0),
    }


def parse_join_addr(text: str, default_port: int) -> Address:
    """``"host"``, ``"host:port"`` or ``"[v6]:port"`` → ``(host, port)``."""
    raw = text.strip()
    if not raw:
        raise InvalidRequest("empty join address", field="address")
    host, port = raw, default_port
    if raw.startswith("["):
        end = raw.find("]")
        if end < 0:
            raise InvalidRequest(f"bad join address {text!r}: missing ']'", field="address")
        host, rest = raw[1:end], raw[end + 1 :]
        if rest:
            port = _port(rest.removeprefix(":"), text)
    elif raw.count(":") == 1:
        host, port_text = raw.split(":")
        port = _port(port_text, text)
    if not host:
        raise InvalidRequest(f"bad join address {text!r}: no host", field="address")
    return host, port


def _port(text: str, whole: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise InvalidRequest(f"bad join address {whole!r}: invalid port", field="address")
    return int(text)


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyringPoolReport:
    """One pool's outcome of a keyring operation (Consul's KeyringResponse)."""

    wan: bool
    datacenter: str
    #: key (base64) → how many responding nodes hold it
    keys: Mapping[str, int] = field(default_factory=dict)
    num_nodes: int = 0
    #: node name → error text
    messages: Mapping[str, str] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        """msgpack/JSON-able form (RPC between datacenters)."""
        return {
            "wan": self.wan,
            "dc": self.datacenter,
            "keys": dict(self.keys),
            "num_nodes": self.num_nodes,
            "messages": dict(self.messages),
        }

    @classmethod
    def from_wire(cls, raw: Any) -> KeyringPoolReport:
        """Inverse of ``to_wire`` (untrusted: validated)."""
        if not isinstance(raw, dict):
            raise InvalidRequest("malformed keyring report")
        return cls(
            wan=bool(raw.get("wan")),
            datacenter=str(raw.get("dc", "")),
            keys={str(k): int(v) for k, v in dict(raw.get("keys") or {}).items()},
            num_nodes=int(raw.get("num_nodes", 0)),
            messages={str(k): str(v) for k, v in dict(raw.get("messages") or {}).items()},
        )


def keyring_reports(dc_results: Iterable[Mapping[str, Any]]) -> list[KeyringPoolReport]:
    """Consul's per-pool key counts from per-datacenter results of a keyring operation.

    Each result is ``{"dc", "replies": {node: {"keys", "wan_keys"?}}, "failures": {node:
    text}}``. One LAN report per datacenter (every node answers for its LAN keyring) and
    one WAN report over all servers (the nodes that sent ``wan_keys``), WAN first as Consul
    lists it. Nodes that failed are named in their datacenter's LAN report.
    """
    lan_reports: list[KeyringPoolReport] = []
    wan: collections.Counter[str] = collections.Counter()
    wan_nodes = 0
    for result in dc_results:
        dc = str(result.get("dc", ""))
        replies: Mapping[str, Any] = result.get("replies") or {}
        failures: Mapping[str, str] = result.get("failures") or {}
        lan: collections.Counter[str] = collections.Counter()
        for reply in replies.values():
            lan.update(reply.get("keys") or [])
            if reply.get("wan_keys"):
                wan.update(reply["wan_keys"])
                wan_nodes += 1
        lan_reports.append(
            KeyringPoolReport(
                wan=False, datacenter=dc, keys=dict(lan),
                num_nodes=len(replies) + len(failures), messages=dict(failures),
            )
        )  # fmt: skip
    if not wan_nodes:
        return lan_reports
    wan_report = KeyringPoolReport(wan=True, datacenter="", keys=dict(wan), num_nodes=wan_nodes)
    return [wan_report, *lan_reports]
