"""Real sockets on 127.0.0.1: agents in LAN pools and datacenters joined over WAN.

Each test starts a handful of in-process agents (``tests.helpers.cluster.Cluster``)
with the fast gossip profile and talks to them over their HTTP APIs, as a user would.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path
from typing import Any

import pytest

from node.agent.agent import Agent
from node.agent.cluster import ClusterView
from node.catalog.values import NodeRecord
from node.catalog.watch import IndexNotifier
from node.config.agent import AgentConfig, Ports
from node.errors import DatacenterUnavailable, InvalidRequest
from node.gossip.keyring import LAN_KEYRING_FILE, WAN_KEYRING_FILE, Keyring, generate_key
from node.gossip.messages import MemberStatus
from node.gossip.state import Member
from node.rpc.reads import NODES
from tests.helpers.cluster import FAST_GOSSIP, Cluster, converged
from tests.helpers.poll import wait_for

pytestmark = pytest.mark.timeout(60)


async def _register(cluster: Cluster, agent: Agent, name: str, port: int, **extra: Any) -> None:
    status, body = await cluster.put(
        agent, "/v1/agent/service/register", json={"Name": name, "Port": port, **extra}
    )
    assert status == 200, body


async def _nodes_of(cluster: Cluster, agent: Agent, service: str, **params: Any) -> list[str]:
    status, body, _ = await cluster.get(agent, f"/v1/catalog/service/{service}", **params)
    assert status == 200, body
    return sorted(e["Node"] for e in body)


# ---------------------------------------------------------------------------- one datacenter


async def test_lan_pool_converges_and_every_node_answers_for_the_datacenter(
    tmp_path: Path,
) -> None:
    async with Cluster(tmp_path) as cluster:
        s1 = await cluster.start("s1", server=True)
        clients = [await cluster.start(f"c{i}", join=[s1]) for i in (1, 2, 3)]
        everyone = [s1, *clients]
        await wait_for(lambda: converged(everyone, 4), "4 alive members everywhere")
        for i, agent in enumerate(clients, start=1):
            await _register(cluster, agent, "web", 8000 + i)
        await _register(cluster, s1, "db", 5432)

        async def all_see_everything() -> bool:
            for agent in everyone:
                if await _nodes_of(cluster, agent, "web") != ["c1", "c2", "c3"]:
                    return False
                _, services, _ = await cluster.get(agent, "/v1/catalog/services")
                if set(services) != {"db", "web"}:
                    return False
            return True

        await wait_for(all_see_everything, "every node sees every service")
        for agent in everyone:
            _, nodes, _ = await cluster.get(agent, "/v1/catalog/nodes")
            assert sorted(n["Node"] for n in nodes) == ["c1", "c2", "c3", "s1"]
            _, health, _ = await cluster.get(agent, "/v1/health/service/web", passing="1")
            assert sorted(e["Node"]["Node"] for e in health) == ["c1", "c2", "c3"]
            _, leader, _ = await cluster.get(agent, "/v1/status/leader")
            assert leader == f"127.0.0.1:{s1.bound['server'][1]}"
        # the member list is Consul's shape, this node first
        _, members, _ = await cluster.get(clients[0], "/v1/agent/members")
        assert members[0]["Name"] == "c1"
        roles = {m["Name"]: m["Tags"]["role"] for m in members}
        assert roles == {"s1": "consul", "c1": "node", "c2": "node", "c3": "node"}
        # a client is in no WAN pool: empty list, as Consul answers
        assert (await cluster.get(clients[0], "/v1/agent/members", wan="1"))[1] == []


async def test_a_newcomers_record_reaches_earlier_members_without_push_pull(
    tmp_path: Path,
) -> None:
    slow = dataclasses.replace(FAST_GOSSIP, push_pull_interval=300.0)
    async with Cluster(tmp_path) as cluster:
        s1 = await cluster.start("s1", server=True, lan_gossip=slow)
        c1 = await cluster.start("c1", join=[s1], lan_gossip=slow)
        c2 = await cluster.start("c2", join=[s1], lan_gossip=slow)
        # c1 never push-pulls with c2 (or with s1 after c2 came): only broadcasts carry it
        # Deadlines leave room for a loaded CI box; the broadcast itself takes milliseconds.
        await wait_for(lambda: c1.store.entry("c2") is not None, "c2's record on c1", timeout=15)
        await wait_for(lambda: c2.store.entry("c1") is not None, "c1's record on c2", timeout=15)


async def test_a_record_too_big_to_broadcast_is_fetched_by_rpc(tmp_path: Path) -> None:
    slow = dataclasses.replace(FAST_GOSSIP, push_pull_interval=300.0)
    async with Cluster(tmp_path) as cluster:
        s1 = await cluster.start("s1", server=True, lan_gossip=slow)
        c1 = await cluster.start("c1", join=[s1], lan_gossip=slow)
        await wait_for(lambda: converged([s1, c1], 2), "converged")
        # ~2 KB of metadata: neither the record nor its delta fits a gossip packet, so
        # only a digest is gossiped and s1 must fetch the record from c1.
        meta = {f"k{i:02d}": "v" * 60 for i in range(32)}
        await _register(cluster, c1, "big", 1234, Meta=meta)

        def has_big() -> bool:
            entry = s1.store.entry("c1")
            return entry is not None and "big" in entry.record.services

        await wait_for(has_big, "big record fetched on s1", timeout=5)
        assert dict(s1.store.entry("c1").record.services["big"].meta) == meta  # type: ignore[union-attr]
        assert not s1.catalog_sync.missing()
        assert c1.rpc_server.stats.get("calls", 0) >= 1  # the Catalog.NodeRecord fetch


async def test_a_client_leaves_on_terminate(tmp_path: Path) -> None:
    async with Cluster(tmp_path) as cluster:
        s1 = await cluster.start("s1", server=True)
        c1 = await cluster.start("c1", join=[s1])
        await wait_for(lambda: converged([s1, c1], 2), "converged")
        assert c1.config.leave_on_terminate and not s1.config.leave_on_terminate
        await cluster.stop(c1, leave=False)  # like SIGTERM: the agent leaves by itself
        status = {m["name"]: m["status"] for m in s1.members()}
        assert status["c1"] == 3  # left, not failed: the leave went out before shutdown


async def test_failed_node_turns_critical_and_left_node_disappears(tmp_path: Path) -> None:
    async with Cluster(tmp_path) as cluster:
        s1 = await cluster.start("s1", server=True)
        c1 = await cluster.start("c1", join=[s1])
        c2 = await cluster.start("c2", join=[s1])
        c3 = await cluster.start("c3", join=[s1])
        await wait_for(lambda: converged([s1, c1, c2, c3], 4), "converged")
        await _register(cluster, c2, "api", 9000)
        await _register(cluster, c3, "cache", 6379)

        def replicated(agent: Agent) -> bool:
            api, cache = agent.store.entry("c2"), agent.store.entry("c3")
            return bool(api and "api" in api.record.services and cache and cache.record.services)

        await wait_for(lambda: all(replicated(a) for a in (s1, c1, c3)), "services replicated")
        await cluster.kill(c2)  # crash: no leave

        async def api_critical_everywhere() -> bool:
            for agent in (s1, c1, c3):
                _, entries, _ = await cluster.get(agent, "/v1/health/service/api")
                checks = {c["CheckID"]: c["Status"] for e in entries for c in e["Checks"]}
                if checks.get("serfHealth") != "critical":
                    return False
            return True

        await wait_for(api_critical_everywhere, "api's serfHealth critical on all nodes")
        _, failed, _ = await cluster.get(s1, "/v1/agent/members")
        assert {m["Name"]: m["Status"] for m in failed}["c2"] == 4

        await cluster.stop(c3, leave=True)

        async def cache_gone() -> bool:
            for agent in (s1, c1):
                if await _nodes_of(cluster, agent, "cache"):
                    return False
                _, nodes, _ = await cluster.get(agent, "/v1/catalog/nodes")
                if "c3" in {n["Node"] for n in nodes}:
                    return False
            return True

        await wait_for(cache_gone, "left node's entries gone everywhere")
        # force-leave turns the failed c2 into left: its entries go too
        status, _ = await cluster.put(s1, "/v1/agent/force-leave/c2")
        assert status == 200
        await wait_for(lambda: c1.store.entry("c2") is None, "force-left node removed on c1")
        status, text = await cluster.put(s1, "/v1/agent/force-leave/nobody")
        assert status == 404 and "nobody" in text


async def test_blocking_query_wakes_on_a_replicated_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with Cluster(tmp_path) as cluster:
        s1 = await cluster.start("s1", server=True)
        c1 = await cluster.start("c1", join=[s1])
        await wait_for(lambda: converged([s1, c1], 2), "converged")
        await _register(cluster, c1, "web", 80)

        async def web_on_s1() -> bool:
            return await _nodes_of(cluster, s1, "web") == ["c1"]

        await wait_for(web_on_s1, "c1's web replicated to s1")
        _, _, headers = await cluster.get(s1, "/v1/health/service/web")
        index = headers["X-Consul-Index"]

        async def blocked() -> tuple[float, Any, dict[str, str]]:
            start = time.monotonic()
            _, body, hdrs = await cluster.get(s1, "/v1/health/service/web", index=index, wait="20s")
            return time.monotonic() - start, body, hdrs

        # s1's own components park on its notifier too: the query is the one given ~20 s.
        parked: list[float] = []
        real_wait = IndexNotifier.wait

        async def recording_wait(notifier: IndexNotifier, index_above: int, timeout: float) -> int:
            if notifier is s1.notifier:
                parked.append(timeout)
            return await real_wait(notifier, index_above, timeout)

        monkeypatch.setattr(IndexNotifier, "wait", recording_wait)
        waiter = asyncio.create_task(blocked())
        await wait_for(lambda: any(15 < t < 30 for t in parked), "the query parked on s1")
        assert not waiter.done()
        await _register(cluster, c1, "web", 81, ID="web-2")
        elapsed, body, hdrs = await asyncio.wait_for(waiter, 10)
        assert elapsed < 10
        assert sorted(e["Service"]["ID"] for e in body) == ["web", "web-2"]
        assert int(hdrs["X-Consul-Index"]) > int(index)


async def test_records_are_fetched_by_rpc_from_their_owner(tmp_path: Path) -> None:
    async with Cluster(tmp_path) as cluster:
        s1 = await cluster.start("s1", server=True)
        c1 = await cluster.start("c1", join=[s1])
        await _register(cluster, c1, "web", 80)
        await wait_for(lambda: s1.store.entry("c1") is not None, "c1 replicated")
        raw = await s1.rpc_client.call(
            c1.bound["server"], "Catalog.NodeRecord", {"node": "c1"}, timeout=2
        )
        record = NodeRecord.from_wire(raw)
        assert record.name == "c1" and "web" in record.services
        assert (
            await s1.rpc_client.call(
                c1.bound["server"], "Catalog.NodeRecord", {"node": "zz"}, timeout=2
            )
            is None
        )
        with pytest.raises(InvalidRequest, match="node"):
            await s1.rpc_client.call(c1.bound["server"], "Catalog.NodeRecord", [], timeout=2)


async def test_join_and_leave_over_http(tmp_path: Path) -> None:
    async with Cluster(tmp_path) as cluster:
        s1 = await cluster.start("s1", server=True)
        c1 = await cluster.start("c1")
        status, _ = await cluster.put(c1, f"/v1/agent/join/{cluster.lan_addr(s1)}")
        assert status == 200
        await wait_for(lambda: converged([s1, c1], 2), "joined over HTTP")
        status, text = await cluster.put(c1, f"/v1/agent/join/{cluster.lan_addr(s1)}", wan="1")
        assert status == 400 and "Must be a server" in text
        status, _ = await cluster.put(c1, "/v1/agent/leave")
        assert status == 200
        await wait_for(
            lambda: {m["name"]: m["status"] for m in s1.members()}.get("c1") == 3, "c1 left"
        )


# ---------------------------------------------------------------------------- two datacenters


async def test_two_datacenters_over_wan(tmp_path: Path) -> None:
    async with Cluster(tmp_path) as cluster:
        s1 = await cluster.start("s1", server=True)
        c1 = await cluster.start("c1", join=[s1])
        s2 = await cluster.start("s2", dc="dc2", server=True, join_wan=[s1])
        c2 = await cluster.start("c2", dc="dc2", join=[s2])
        await _register(cluster, c2, "billing", 7000)
        await _register(cluster, c1, "web", 80)

        async def both_everywhere() -> bool:
            for agent, own in ((s1, "dc1"), (c1, "dc1"), (s2, "dc2"), (c2, "dc2")):
                _, dcs, _ = await cluster.get(agent, "/v1/catalog/datacenters")
                if dcs != [own, *sorted({"dc1", "dc2"} - {own})]:
                    return False
            return True

        await wait_for(both_everywhere, "both datacenters listed on every node")
        _, wan, _ = await cluster.get(s1, "/v1/agent/members", wan="1")
        assert sorted(m["Name"] for m in wan) == ["s1.dc1", "s2.dc2"]
        await wait_for(lambda: s2.store.entry("c2") is not None, "billing replicated in dc2")

        # cross-datacenter read from a client: forwarded through s1 to a dc2 server
        status, body, headers = await cluster.get(c1, "/v1/catalog/service/billing", dc="dc2")
        assert status == 200, body
        assert [(e["Node"], e["Datacenter"]) for e in body] == [("c2", "dc2")]
        assert int(headers["X-Consul-Index"]) >= 1
        _, health, _ = await cluster.get(c1, "/v1/health/service/billing", dc="dc2")
        assert [e["Node"]["Datacenter"] for e in health] == ["dc2"]
        # and the other way, from a server
        assert await _nodes_of(cluster, s2, "web", dc="dc1") == ["c1"]
        # a blocking read is forwarded with its index and wait
        _, _, headers = await cluster.get(c1, "/v1/catalog/service/billing", dc="dc2")
        start = time.monotonic()
        status, _, _ = await cluster.get(
            c1, "/v1/catalog/service/billing", dc="dc2", index=headers["X-Consul-Index"], wait="1s"
        )
        assert status == 200 and 0.5 < time.monotonic() - start < 5

        # unknown datacenter: Consul's error text, at once
        for agent in (c1, s1):
            status, text, _ = await cluster.get(agent, "/v1/catalog/services", dc="nowhere")
            assert status == 500 and text.startswith("No path to datacenter"), text

        # every server of dc2 down: a bounded error, not a hang
        await cluster.kill(s2)
        start = time.monotonic()
        status, text, _ = await cluster.get(c1, "/v1/catalog/services", dc="dc2")
        assert status == 500 and "dc2" in text, text
        assert time.monotonic() - start < 6.5
        with pytest.raises(DatacenterUnavailable):
            await s1.router.call_server("Catalog.Datacenters", dc="dc2", timeout=1.0)


# ---------------------------------------------------------------------------- encryption


async def test_wrong_key_is_refused(tmp_path: Path) -> None:
    async with Cluster(tmp_path) as cluster:
        s1 = await cluster.start("s1", server=True, encrypt=generate_key())
        c1 = await cluster.start("c1", encrypt=generate_key())
        assert await c1.join([cluster.lan_addr(s1)]) == 0
        assert [m["name"] for m in s1.members()] == ["s1"]
        assert [m["name"] for m in c1.members()] == ["c1"]
        assert s1.lan is not None and s1.lan.stats.get("dropped_undecryptable", 0) > 0
        # RPC is sealed with the same keyring: a wrong-key call gets no answer
        with pytest.raises(Exception, match="(?i)closed|unreachable|answer"):
            await c1.rpc_client.call(s1.bound["server"], "Catalog.Datacenters", None, timeout=1)


async def test_key_rotation_across_lan_and_wan(tmp_path: Path) -> None:
    k1, k2 = generate_key(), generate_key()
    async with Cluster(tmp_path) as cluster:
        s1 = await cluster.start("s1", server=True, encrypt=k1)
        c1 = await cluster.start("c1", join=[s1], encrypt=k1)
        s2 = await cluster.start("s2", dc="dc2", server=True, join_wan=[s1], encrypt=k1)
        await wait_for(lambda: converged([s1, c1], 2) and len(s2.datacenters()) == 2, "up")
        await wait_for(lambda: c1.datacenters() == ["dc1", "dc2"], "client knows dc2")

        for method, op in (("POST", "install"), ("PUT", "use"), ("DELETE", "remove")):
            key = k2 if op != "remove" else k1
            assert cluster._session is not None
            async with cluster._session.request(
                method, cluster.url(c1, "/v1/operator/keyring"), json={"Key": key}
            ) as resp:
                assert resp.status == 200, (op, await resp.text())

        _, pools, _ = await cluster.get(c1, "/v1/operator/keyring")
        by_pool = {
            ("WAN" if p["WAN"] else p["Datacenter"]): (p["Keys"], p["NumNodes"]) for p in pools
        }
        assert by_pool == {"WAN": ({k2: 2}, 2), "dc1": ({k2: 2}, 2), "dc2": ({k2: 1}, 1)}
        for agent in (s1, s2):
            for name in (LAN_KEYRING_FILE, WAN_KEYRING_FILE):
                saved = Keyring.load(Path(agent.config.data_dir or "") / name)
                assert saved is not None and saved.keys_base64() == (k2,)

        # gossip and RPC still work, and a newcomer holding only the new key gets in
        c2 = await cluster.start("c2", join=[c1], encrypt=k2)
        await wait_for(lambda: converged([s1, c1, c2], 3), "newcomer with the new key joined")
        status, body, _ = await cluster.get(c2, "/v1/catalog/nodes", dc="dc2")
        assert status == 200 and [n["Node"] for n in body] == ["s2"]

        # bad input: a clear error naming the key
        status, text = await cluster.put(c1, "/v1/operator/keyring", json={"Key": "not base64!"})
        assert status == 400 and "base64" in text


# ---------------------------------------------------------------------------- config + CLI


async def test_retry_join_from_config(tmp_path: Path) -> None:
    async with Cluster(tmp_path) as cluster:
        s1 = await cluster.start("s1", server=True)
        s2 = await cluster.start(
            "s2", dc="dc2", server=True, retry_join_wan=(cluster.wan_addr(s1),),
            retry_interval_wan=0.2,
        )  # fmt: skip
        c1 = await cluster.start("c1", retry_join=(cluster.lan_addr(s1),), retry_interval=0.2)
        await wait_for(lambda: converged([s1, c1], 2), "c1 joined through retry_join")
        await wait_for(
            lambda: s1.datacenters() == ["dc1", "dc2"], "s2 joined through retry_join_wan"
        )
        assert s2.datacenters() == ["dc2", "dc1"]


async def _cli(*argv: str) -> int:
    from node.cli import main as cli

    return await asyncio.to_thread(cli.main, list(argv), {})


async def test_cli_cluster_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = generate_key()
    async with Cluster(tmp_path) as cluster:
        s1 = await cluster.start("s1", server=True, encrypt=key)
        s2 = await cluster.start("s2", dc="dc2", server=True, encrypt=key)
        c1 = await cluster.start("c1", encrypt=key)
        http = "{}:{}".format(*c1.bound["http"])
        s1_http = "{}:{}".format(*s1.bound["http"])
        capsys.readouterr()

        assert await _cli("join", "-http-addr", http, cluster.lan_addr(s1)) == 0
        assert "Successfully joined cluster by contacting 1 nodes." in capsys.readouterr().out
        assert await _cli("join", "-wan", "-http-addr", s1_http, cluster.wan_addr(s2)) == 0
        await wait_for(lambda: c1.datacenters() == ["dc1", "dc2"], "dc2 known on the client")
        capsys.readouterr()

        assert await _cli("members", "-http-addr", http) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[0].split() == [
            "Node", "Address", "Status", "Type", "Build", "Protocol", "DC", "Segment"
        ]  # fmt: skip
        rows = {line.split()[0]: line.split() for line in lines[1:]}
        assert rows["s1"][2:4] == ["alive", "server"] and rows["c1"][2:4] == ["alive", "client"]
        assert await _cli("members", "-wan", "-http-addr", s1_http) == 0
        assert {ln.split()[0] for ln in capsys.readouterr().out.splitlines()[1:]} == {
            "s1.dc1", "s2.dc2"
        }  # fmt: skip
        assert await _cli("members", "-detailed", "-http-addr", http) == 0
        detailed = capsys.readouterr().out.splitlines()
        assert detailed[0].split() == ["Node", "Address", "Status", "Tags"]
        assert any("role=consul" in ln and ln.startswith("s1") for ln in detailed)

        assert await _cli("keyring", "-list", "-http-addr", http) == 0
        out = capsys.readouterr().out
        assert "WAN:" in out and "dc1 (LAN):" in out and "dc2 (LAN):" in out
        assert f"{key} [2/2]" in out and f"{key} [1/1]" in out
        assert await _cli("keyring", "-install", "bad!", "-http-addr", http) == 1
        assert "base64" in capsys.readouterr().err

        assert await _cli("force-leave", "-http-addr", http, "ghost") == 1
        assert "ghost" in capsys.readouterr().err
        assert await _cli("leave", "-http-addr", http) == 0
        assert "Graceful leave complete" in capsys.readouterr().out
        await wait_for(
            lambda: {m["name"]: m["status"] for m in s1.members()}.get("c1") == 3, "c1 left"
        )


def test_cli_keygen_prints_a_usable_key(capsys: pytest.CaptureFixture[str]) -> None:
    from node.cli import main as cli

    assert cli.main(["keygen"], {}) == 0
    key = capsys.readouterr().out.strip()
    assert len(Keyring.from_base64(key).primary) == 32


async def test_builtin_rpc_methods_reject_bad_input_clearly(tmp_path: Path) -> None:
    async with Cluster(tmp_path) as cluster:
        s1 = await cluster.start("s1", server=True)
        c1 = await cluster.start("c1", join=[s1])
        call = c1.rpc_client.call
        addr = s1.bound["server"]
        cases = [
            ("Catalog.Read", {"name": "agent.self", "args": {}}, "non-forwardable"),
            ("Catalog.Read", {"name": "nope", "args": {}}, "unknown"),
            ("Catalog.Read", {"name": "catalog.nodes", "args": {}, "wait": "x"}, "wait"),
            ("Catalog.Read", {"name": "catalog.nodes", "args": {}, "index": -1}, "index"),
            ("Forward.Call", {"dc": 3}, "Forward.Call needs"),
            ("Keyring.Cluster", {"op": "shred"}, "unknown keyring operation"),
            ("No.Such", None, "unknown RPC method"),
        ]
        for method, args, text in cases:
            with pytest.raises(InvalidRequest, match=text):
                await call(addr, method, args, timeout=2)
        reply = await call(addr, "Catalog.Read", {"name": "catalog.nodes", "args": {}}, timeout=2)
        assert reply["index"] >= 1 and "s1" in [n.name for n in NODES.from_wire(reply["value"])]
        # a client is no forwarder
        with pytest.raises(InvalidRequest, match="server"):
            await s1.rpc_client.call(
                c1.bound["server"], "Forward.Call", {"dc": "dc2", "method": "x"}, timeout=2
            )


# ---------------------------------------------------------------------------- the view


def _member(
    name: str, host: str, dc: str, role: str, status: MemberStatus = MemberStatus.ALIVE
) -> Member:
    tags = {"dc": dc, "role": role, "port": "8300"}
    return Member(name=name, addr=(host, 8301), tags=tags, incarnation=1, status=status,
                  status_since=0.0)  # fmt: skip


@dataclasses.dataclass
class _Pool:
    found: list[Member]

    def members(self) -> list[Member]:
        return self.found


@dataclasses.dataclass
class _Pools:
    lan: _Pool | None = None
    wan: _Pool | None = None


def _config(*, server: bool) -> AgentConfig:
    return AgentConfig(node_name="s1", datacenter="dc1", server=server, advertise_addr="10.0.0.1",
                       ports=Ports(server=8300))  # fmt: skip


def test_ClusterView_before_the_pools_run_describes_this_node_from_its_config() -> None:
    server = ClusterView(_config(server=True), "id-1", _Pools())
    assert [m["name"] for m in server.members()] == ["s1"]
    assert [m["name"] for m in server.members(wan=True)] == ["s1.dc1"]
    assert server.members()[0]["tags"]["role"] == "consul"
    assert server.leader() == "10.0.0.1:8300" and server.peers() == ["10.0.0.1:8300"]
    assert server.datacenters() == ["dc1"]
    client = ClusterView(_config(server=False), "id-2", _Pools())
    assert client.leader() == "" and client.peers() == [] and client.members(wan=True) == []


def test_ClusterView_leader_peers_and_datacenters_follow_membership() -> None:
    lan = _Pool([
        _member("s3", "10.0.0.3", "dc1", "server"),
        _member("s2", "10.0.0.2", "dc1", "server", MemberStatus.SUSPECT),
        _member("s1", "10.0.0.1", "dc1", "server", MemberStatus.DEAD),
        _member("c1", "10.0.0.9", "dc1", "node"),
        _member("x1", "10.0.1.1", "dc2", "server"),
    ])  # fmt: skip
    pools = _Pools(lan=lan)
    view = ClusterView(_config(server=True), "id-1", pools)
    # The smallest alive (or suspect) server name of the datacenter stands in for the leader.
    assert view.leader() == "10.0.0.2:8300"
    assert view.peers() == ["10.0.0.2:8300", "10.0.0.3:8300"]
    assert [m["name"] for m in view.members()] == ["s1", "c1", "s2", "s3", "x1"]
    pools.wan = _Pool([
        _member("s1.dc1", "10.0.0.1", "dc1", "server"),
        _member("x1.dc2", "10.0.1.1", "dc2", "server"),
        _member("y1.dc0", "10.0.2.1", "dc0", "server", MemberStatus.LEFT),
    ])  # fmt: skip
    assert view.datacenters() == ["dc1", "dc2"]
    assert [m["name"] for m in view.members(wan=True)][0] == "s1.dc1"
    pools.wan = None  # a client: told by a server
    assert view.set_remote_datacenters(["dc1", "dc3"]) is True
    assert view.set_remote_datacenters(["dc1", "dc3"]) is False
    assert view.datacenters() == ["dc1", "dc3"]


def test_ClusterView_where_a_raft_group_runs_leader_and_peers_are_the_group_s() -> None:
    members = [
        dataclasses.replace(m, tags={**m.tags, "raft": f"{m.addr[0]}:18300"})
        for m in (_member(f"s{i}", f"10.0.0.{i}", "dc1", "server") for i in (1, 2, 3))
    ]
    view = ClusterView(_config(server=True), "id-1", _Pools(lan=_Pool(members)))
    assert view.runs_raft()
    view.set_raft(lambda: ("10.0.0.3:18300", ("10.0.0.1:18300", "10.0.0.2:18300")))
    assert view.leader() == "10.0.0.3:8300"  # the group's leader, not the smallest name
    assert view.peers() == ["10.0.0.1:8300", "10.0.0.2:8300"]
    view.set_raft(lambda: ("", ("10.0.0.1:18300",)))
    assert view.leader() == ""  # no leader: says so
    client = ClusterView(_config(server=False), "id-2", _Pools(lan=_Pool(members)))
    assert client.leader() == "" and client.peers() == []
    assert client.set_remote_raft("10.0.0.2:8300", ["10.0.0.2:8300"]) is True
    assert client.set_remote_raft("10.0.0.2:8300", ["10.0.0.2:8300"]) is False
    assert client.leader() == "10.0.0.2:8300" and client.peers() == ["10.0.0.2:8300"]
