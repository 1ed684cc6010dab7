"""/v1/agent/self and ``meshnode info``: what is true of this node, secrets hidden."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import consul
import pytest

from node.api.selfinfo import redact
from node.cli import main as cli
from tests.helpers.cluster import Cluster


def test_redact_hides_keys_tokens_and_secrets_at_any_depth() -> None:
    raw = {
        "EncryptKey": "abc",
        "Empty_token": "",
        "ConnectCAConfig": {"PrivateKey": "-----BEGIN", "RootCert": "pem", "LeafCertTTL": "72h"},
        "Tokens": ["t1"],
        "Secret": 3,
    }
    assert redact(raw) == {
        "EncryptKey": "hidden",
        "Empty_token": "",
        "ConnectCAConfig": {"PrivateKey": "hidden", "RootCert": "pem", "LeafCertTTL": "72h"},
        "Tokens": ["hidden"],
        "Secret": 3,
    }


async def test_self_of_a_server_and_a_client(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = base64.b64encode(b"k" * 32).decode()
    async with Cluster(tmp_path) as cluster:
        s1 = await cluster.start("s1", server=True, encrypt=key)
        c1 = await cluster.start("c1", join=[s1], encrypt=key)
        host, port = s1.bound["http"]
        c = consul.Consul(host=host, port=port)
        me: dict[str, Any] = await asyncio.to_thread(c.agent.self)
        assert set(me) == {"Member", "xDS", "Stats", "Config", "Coord", "DebugConfig", "Meta"}
        assert me["Config"]["NodeName"] == "s1" and me["Config"]["Server"] is True
        assert me["Member"] in await asyncio.to_thread(c.agent.members)
        consul_stats = me["Stats"]["consul"]
        leader = await asyncio.to_thread(c.status.leader)
        assert consul_stats["leader_addr"] == leader
        assert leader in await asyncio.to_thread(c.status.peers)
        assert consul_stats["server"] == "true" and consul_stats["leader"] == "true"
        assert consul_stats["known_datacenters"] == "1"
        assert me["Stats"]["serf_lan"]["encrypted"] == "true"
        assert all(isinstance(v, str) for sec in me["Stats"].values() for v in sec.values())
        debug = me["DebugConfig"]
        assert debug["EncryptKey"] == "hidden" and key not in str(me)
        assert debug["HTTPPort"] == port and debug["ServerMode"] is True
        assert me["Meta"] == {"consul-network-segment": ""}
        assert me["xDS"]["SupportedProxies"] == {"envoy": []}

        chost, cport = c1.bound["http"]
        client_self = await asyncio.to_thread(consul.Consul(host=chost, port=cport).agent.self)
        assert client_self["Stats"]["consul"]["server"] == "false"
        assert "leader_addr" not in client_self["Stats"]["consul"]
        assert "raft" not in client_self["Stats"] and "serf_wan" not in client_self["Stats"]

        env = {"MESHNODE_HTTP_ADDR": f"{host}:{port}"}
        assert await asyncio.to_thread(cli.main, ["info"], env) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[0] == "agent:"
        assert "\tserver = true" in lines and "consul:" in lines and "runtime:" in lines
        assert f"\tleader_addr = {leader}" in lines
