"""Cluster helpers the agent uses: member display, join addresses, keyring reports.

Rule: pure translation between gossip/RPC values and what the API and CLI show; no I/O.
Member status follows serf's numbering as /v1/agent/members encodes it (1 alive,
2 leaving, 3 left, 4 failed); a *suspect* member is still alive to serf. The gossip tag
``role = "server"`` (what ``node.rpc.routing`` routes on) is shown as Consul's
``"consul"`` so Consul tooling recognises servers.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from node.errors import InvalidRequest
from node.gossip.messages import Address, MemberStatus
from node.gossip.state import Member
from node.rpc.routing import ROLE_SERVER, TAG_ROLE

__all__ = [
    "SERF_STATUS",
    "member_view",
    "parse_join_addr",
    "KeyringPoolReport",
    "keyring_reports",
]

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
