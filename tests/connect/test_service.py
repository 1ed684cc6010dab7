"""Connect's components against fake node seams: CA roles, replication, writes, leaves, faults."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from node.catalog.values import MeshGatewayMode
from node.connect import parse_config_entry, parse_intention
from node.connect.ca import TrustBundle
from node.connect.records import KIND_INTENTION
from node.errors import ConfigError, Conflict, InvalidRequest, NotFound, TrustError
from tests.connect.service_fakes import TRANSIENT, FakeNet
from tests.helpers.poll import wait_for

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def net() -> AsyncIterator[FakeNet]:
    network = FakeNet()
    yield network
    await network.stop()


def _sidecar(name: str, port: int = 8080) -> dict[str, object]:
    return {"Name": name, "Port": port, "Connect": {"SidecarService": {}}}


def _entry(name: str, mode: str = "local") -> object:
    return parse_config_entry(
        {"Kind": "service-defaults", "Name": name, "MeshGateway": {"Mode": mode}}
    )


async def _ready(net: FakeNet, *names: str) -> None:
    for name in names:
        svc = net.services[name]
        await wait_for(lambda svc=svc: svc.roots(), f"roots on {name}", ignoring=TRANSIENT)
        if svc.authority is not None:
            await wait_for(
                lambda svc=svc: svc.authority.signer, f"signer on {name}", ignoring=TRANSIENT
            )


# --------------------------------------------------------------------------- CA roles


async def test_primary_server_bootstraps_ca_and_keeps_the_key_private(
    net: FakeNet, tmp_path: Path
) -> None:
    svc = net.add("s1", server=True, data_dir=str(tmp_path))
    net.start()
    await _ready(net, "s1")
    roots = svc.roots()
    assert roots is not None and svc.trust_domain == f"{roots.cluster_id}.consul"
    assert "PRIVATE KEY" not in repr(roots) and "PRIVATE KEY" not in repr(svc.ca_config())
    state = (tmp_path / "connect" / "globalstate.msgpack").read_bytes()
    assert b"PRIVATE KEY" not in state
    ca_file = tmp_path / "connect" / "ca.json"
    assert b"PRIVATE KEY" in ca_file.read_bytes()
    assert ca_file.stat().st_mode & 0o077 == 0


async def test_second_primary_server_fetches_root_key_and_a_client_is_refused(
    net: FakeNet,
) -> None:
    net.add("s1", server=True)
    net.add("s2", server=True)
    net.add("c1")
    net.start()
    await _ready(net, "s1", "s2")
    s1, s2 = net.services["s1"], net.services["s2"]
    # s1 (smallest name) made the root; s2 got the key by CA.RootKey.
    assert s1.roots() == s2.roots()
    assert s2.authority.signer.root_id == s1.roots().active_root_id
    assert ("s2", "s1", "CA.RootKey") in net.rpc_log
    handler = net.agents["s1"].handlers["CA.RootKey"]
    root_id = s1.roots().active_root_id
    with pytest.raises(TrustError, match="'c1' is not a server"):
        await handler({"node": "c1", "root_id": root_id})
    with pytest.raises(TrustError, match="not a server"):
        await handler({"root_id": root_id})


async def test_leaf_for_a_sidecar_on_a_client_is_signed_by_a_server(net: FakeNet) -> None:
    net.add("s1", server=True)
    client = net.add("c1")
    net.agents["c1"].register(_sidecar("web"))
    net.start()
    await _ready(net, "s1", "c1")
    leaf = await wait_for(lambda: client.leaf("web"), "leaf for web", ignoring=TRANSIENT)
    roots = client.roots()
    spiffe = TrustBundle(roots.trusted_pems).verify(
        leaf.cert_pem, now=net.agents["c1"].clock.utcnow()
    )
    assert spiffe.service == "web" and spiffe.datacenter == "dc1"
    assert "BEGIN EC PRIVATE KEY" in leaf.private_key_pem
    # Deregistering stops keeping it.
    net.agents["c1"].local.deregister_service("web-sidecar-proxy")
    assert client.leaf("web") is None


async def test_sign_leaf_refuses_a_service_not_registered_on_the_asker(net: FakeNet) -> None:
    net.add("s1", server=True)
    net.add("c1")
    net.start()
    await _ready(net, "s1")
    from node.connect.ca import make_leaf_csr
    from node.connect.spiffe import SpiffeID

    td = net.services["s1"].trust_domain
    _, csr = make_leaf_csr(SpiffeID(trust_domain=td, datacenter="dc1", service="db"))
    handler = net.agents["s1"].handlers["CA.SignLeaf"]
    with pytest.raises(TrustError, match="'db' is not registered on node 'c1'"):
        await handler({"csr": csr, "node": "c1", "service": "db"})
    with pytest.raises(InvalidRequest, match="csr, node and service"):
        await handler({"csr": csr})


# --------------------------------------------------------------------------- two DCs


async def _two_dcs(net: FakeNet) -> None:
    net.add("s1", "dc1", server=True)
    net.add("c1", "dc1")
    net.add("s2", "dc2", server=True)
    net.add("c2", "dc2")
    net.agents["c2"].register(_sidecar("api", 9090))
    net.start()
    await _ready(net, "s1", "c1", "s2", "c2")


async def test_secondary_gets_roots_intermediate_and_issues_leaves_chaining_to_primary_root(
    net: FakeNet, tmp_path: Path
) -> None:
    await _two_dcs(net)
    s1, s2, c2 = net.services["s1"], net.services["s2"], net.services["c2"]
    assert s2.roots() == s1.roots() and s2.trust_domain == s1.trust_domain
    assert ("s2", "s1", "CA.SignIntermediate") in net.rpc_log
    leaf = await wait_for(lambda: c2.leaf("api"), "leaf in dc2", ignoring=TRANSIENT)
    root_pem = s1.roots().active_root.root_cert
    chain = leaf.cert_pem
    assert chain.count("BEGIN CERTIFICATE") == 2  # leaf + intermediate, as Consul's CertPEM
    spiffe = TrustBundle([root_pem]).verify(chain, now=net.agents["c2"].clock.utcnow())
    assert spiffe.datacenter == "dc2"
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl not installed")
    (tmp_path / "root.pem").write_text(root_pem)
    first_end = chain.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----\n")
    (tmp_path / "leaf.pem").write_text(chain[:first_end])
    (tmp_path / "inter.pem").write_text(chain[first_end:])
    done = subprocess.run(
        [openssl, "verify", "-CAfile", tmp_path / "root.pem", "-untrusted",
         tmp_path / "inter.pem", tmp_path / "leaf.pem"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


async def test_write_from_a_secondary_client_is_forwarded_and_readable_everywhere(
    net: FakeNet,
) -> None:
    await _two_dcs(net)
    c2 = net.services["c2"]
    assert await c2.put_config_entry(_entry("web"))
    # Read-your-writes on the writer, at once.
    assert c2.config_entry("service-defaults", "web").mesh_gateway is MeshGatewayMode.LOCAL
    for name in ("s1", "c1", "s2"):
        svc = net.services[name]
        await wait_for(
            lambda svc=svc: svc.config_entries().get(("service-defaults", "web")),
            "the entry everywhere",
            ignoring=TRANSIENT,
        )
    assert ("s2", "s1", "State.Apply") in net.rpc_log
    # The record was stamped by the primary server, not by the writer.
    stamp = net.services["s1"].stamp_of("service-defaults", "web")
    assert stamp.node == net.agents["s1"].node_id


async def test_cas_semantics(net: FakeNet) -> None:
    await _two_dcs(net)
    c2 = net.services["c2"]
    assert await c2.put_config_entry(_entry("db"), cas=0)
    assert not await c2.put_config_entry(_entry("db", "remote"), cas=0)  # exists
    _, modify = c2.indexes("service-defaults", "db")
    assert not await c2.put_config_entry(_entry("db", "remote"), cas=modify + 100)
    assert await c2.put_config_entry(_entry("db", "remote"), cas=modify)
    assert c2.config_entry("service-defaults", "db").mesh_gateway is MeshGatewayMode.REMOTE


async def test_intentions_forwarded_unique_and_deleted_with_tombstones(net: FakeNet) -> None:
    await _two_dcs(net)
    c1, c2 = net.services["c1"], net.services["c2"]
    now = net.agents["c2"].clock.utcnow()
    body = {"SourceName": "web", "DestinationName": "api", "Action": "deny"}
    ixn = parse_intention(body, intention_id="6c2b5b2e-2b0a-4d2b-9a77-0f5c0c0f0c01", now=now)
    await c2.put_intention(ixn)
    assert c2.authorize("web", "api")[0] is False
    await wait_for(lambda: c1.intentions(), "the intention on c1", ignoring=TRANSIENT)
    assert c1.authorize("web", "api") == (False, f"Matched intention: {c1.intentions()[0]}")
    dup = parse_intention(body, intention_id="6c2b5b2e-2b0a-4d2b-9a77-0f5c0c0f0c02", now=now)
    with pytest.raises(Conflict, match="duplicate intention"):
        await c1.put_intention(dup)
    await c1.delete_intention(ixn.id)
    for name in ("s1", "s2", "c2"):
        svc = net.services[name]
        await wait_for(
            lambda svc=svc: not svc.intentions(), f"delete reached {name}", ignoring=TRANSIENT
        )
        assert svc.replica.state.held(KIND_INTENTION, ixn.id).is_tombstone
    with pytest.raises(NotFound):
        await c1.delete_intention(ixn.id)
    assert c1.authorize("web", "api")[0] is True  # default allow


async def test_lww_merge_after_a_partition_between_primary_servers(net: FakeNet) -> None:
    net.add("s1", server=True)
    net.add("s2", server=True)
    net.start()
    await _ready(net, "s1", "s2")
    net.partition(["s1"], ["s2"])
    s1, s2 = net.services["s1"], net.services["s2"]
    await s1.put_config_entry(_entry("web", "local"))
    await s2.put_config_entry(_entry("web", "remote"))
    assert s1.config_entry("service-defaults", "web") != s2.config_entry("service-defaults", "web")
    net.heal()
    winner = max(
        (s1.stamp_of("service-defaults", "web"), "local"),
        (s2.stamp_of("service-defaults", "web"), "remote"),
    )[1]

    def converged() -> bool:
        modes = {s.config_entry("service-defaults", "web").mesh_gateway.value for s in (s1, s2)}
        return modes == {winner}

    await wait_for(converged, "LWW convergence", ignoring=TRANSIENT)


async def test_root_rotation_reissues_leaves_and_old_leaves_still_verify(net: FakeNet) -> None:
    from node.connect.ca import generate_root, private_key_to_pem

    await _two_dcs(net)
    s1, c2 = net.services["s1"], net.services["c2"]
    old_leaf = await wait_for(lambda: c2.leaf("api"), "leaf in dc2", ignoring=TRANSIENT)
    old_roots = s1.roots()
    now = net.agents["s1"].clock.utcnow()
    new_root = generate_root(trust_domain=old_roots.trust_domain, now=now)
    await c2.set_ca_configuration(
        {"Provider": "consul", "Config": {
            "LeafCertTTL": "72h",
            "PrivateKey": private_key_to_pem(new_root.key),
            "RootCert": new_root.info.root_cert,
        }}
    )  # fmt: skip
    assert c2.roots().active_root_id == new_root.info.id
    new_leaf = await wait_for(
        lambda: (lf := c2.leaf("api")) and lf.root_id == new_root.info.id and lf,
        "leaf re-issued under the new root",
        ignoring=TRANSIENT,
    )
    bundle = TrustBundle(c2.roots().trusted_pems)
    bundle.verify(old_leaf.cert_pem, now=now)
    bundle.verify(new_leaf.cert_pem, now=now)
    assert old_roots.active_root_id in {r.id for r in c2.roots().roots}
    for name in ("s1", "s2", "c1"):
        svc = net.services[name]
        await wait_for(
            lambda svc=svc: svc.roots().active_root_id == new_root.info.id,
            "the new root everywhere",
            ignoring=TRANSIENT,
        )
    body = repr(c2.ca_config()) + repr(c2.roots())
    assert "PRIVATE KEY" not in body


async def test_bad_ca_configuration_changes_nothing(net: FakeNet) -> None:
    await _two_dcs(net)
    c2 = net.services["c2"]
    before = c2.roots()
    with pytest.raises(InvalidRequest, match="LeafCertTTL"):
        await c2.set_ca_configuration({"Config": {"LeafCertTTL": "10m"}})
    with pytest.raises(InvalidRequest, match="given together"):
        await c2.set_ca_configuration({"Config": {"PrivateKey": "x"}})
    assert c2.roots() == before


# --------------------------------------------------------------------------- config, restart


async def test_bootstrap_entries_are_written_only_if_absent(net: FakeNet) -> None:
    proxy = parse_config_entry({"Kind": "proxy-defaults", "Name": "global",
                                "MeshGateway": {"Mode": "local"}})  # fmt: skip
    web = _entry("web", "remote")
    svc = net.add("s1", server=True, config_entries_bootstrap=(proxy, web))
    net.start()
    await wait_for(lambda: len(svc.config_entries()) == 2, "two entries", ignoring=TRANSIENT)
    await net.stop()
    # A user change survives a restart with the same bootstrap block (persisted state).


async def test_state_survives_a_restart_from_data_dir(tmp_path: Path) -> None:
    net = FakeNet()
    svc = net.add("s1", server=True, data_dir=str(tmp_path))
    net.start()
    await _ready(net, "s1")
    await svc.put_config_entry(_entry("web"))
    roots = svc.roots()
    await net.stop()
    net2 = FakeNet()
    again = net2.add("s1", server=True, data_dir=str(tmp_path))
    assert again.roots() == roots
    assert again.config_entry("service-defaults", "web").mesh_gateway is MeshGatewayMode.LOCAL
    assert again.authority.has_root_key(roots.active_root_id)
    assert again.index_of("service-defaults") > 0


# --------------------------------------------------------------------------- primary mismatch


async def test_secondary_naming_another_primary_stops_with_both_values(net: FakeNet) -> None:
    net.add("s1", "dc1", server=True)
    net.start()
    await _ready(net, "s1")
    # dc2 thinks dc3 is the primary: it has no CA, and dc1 names dc1.
    net.add("s2", "dc2", server=True, primary="dc3")
    net.start("s2")
    await wait_for(lambda: "s2" in net.errors, "s2 stopped", ignoring=TRANSIENT)
    error = net.errors["s2"]
    assert isinstance(error, ConfigError)
    assert "'dc3'" in str(error) and "'dc1'" in str(error) and "primary_datacenter" in str(error)
    assert "s1" not in net.errors


async def test_pull_naming_another_primary_is_refused(net: FakeNet) -> None:
    net.add("s1", "dc1", server=True)
    net.start()
    await _ready(net, "s1")
    handler = net.agents["s1"].handlers["State.Pull"]
    with pytest.raises(ConfigError, match="names 'dc2'"):
        await handler({"since": 0, "wait": 0, "pdc": "dc2", "dc": "dc2", "node": "x"})


async def test_client_with_another_primary_stops_on_first_gossip(net: FakeNet) -> None:
    net.add("s1", "dc1", server=True)
    net.add("c1", "dc1", primary="dc9")
    net.start()
    await wait_for(lambda: "c1" in net.errors, "c1 stopped", ignoring=TRANSIENT)
    assert "'dc9'" in str(net.errors["c1"]) and "'dc1'" in str(net.errors["c1"])


async def test_two_self_declared_primaries_the_younger_ca_stops(net: FakeNet) -> None:
    net.add("s1", "dc1", server=True)
    net.start()
    await _ready(net, "s1")
    # dc2 forgot primary_datacenter: it defaults to itself and makes its own CA.
    net.add("s2", "dc2", server=True, primary="dc2")
    net.start("s2")
    await wait_for(lambda: "s2" in net.errors, "s2 stopped", ignoring=TRANSIENT)
    assert isinstance(net.errors["s2"], ConfigError)
    assert "'dc2'" in str(net.errors["s2"]) and "'dc1'" in str(net.errors["s2"])
    # s1 asked dc2 which primary it names, judged it, and keeps running.
    await wait_for(
        lambda: ("s1", "s2", "State.Info") in net.rpc_log, "s1 asked dc2", ignoring=TRANSIENT
    )
    assert "s1" not in net.errors
