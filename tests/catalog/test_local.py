"""LocalState: registration semantics, atomicity, TTL timers, persistence, SIGKILL safety
and config-file versus API ownership of services."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from node import wire
from node.catalog import queries
from node.catalog.local import NODE_ID_FILE, STATE_FILE, LocalState, NodeIdentity, ServiceSource
from node.catalog.parse import parse_check, parse_service
from node.catalog.store import CatalogStore
from node.catalog.values import Health, ServiceDefinition
from node.errors import ConfigError, InvalidRequest, NotFound

REPO = Path(__file__).resolve().parents[2]


class StepClock:
    """A clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now

    def utcnow(self) -> dt.datetime:
        return dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=self.now)


IDENT = NodeIdentity(name="n1", datacenter="dc1", address="127.0.0.1")


def make(
    data_dir: Path | None = None, clock: StepClock | None = None, **kw: object
) -> tuple[LocalState, CatalogStore]:
    store = CatalogStore()
    local = LocalState(
        identity=IDENT, store=store, data_dir=data_dir, clock=clock or StepClock(), **kw
    )  # type: ignore[arg-type]
    return local, store


def web(**extra: object) -> dict[str, object]:
    return {"name": "web", "port": 8080, **extra}


def test_LocalState_register_publishes_to_store_with_growing_version() -> None:
    local, store = make()
    v0 = local.version
    local.register_service(parse_service(web(check={"ttl": "10s"})))
    assert local.version > v0
    entry = store.entry("n1")
    assert entry is not None and entry.record.version == local.version
    assert set(entry.record.services) == {"web"}
    assert entry.record.checks["service:web"].service_name == "web"
    assert entry.record.node_id == local.node_id


def test_LocalState_sidecar_expansion_and_stable_port() -> None:
    local, store = make()
    parent, sidecar = local.register_service(parse_service(web(connect={"sidecar_service": {}})))
    assert (
        sidecar.id == "web-sidecar-proxy" and sidecar.port == 21000 and local.is_sidecar(sidecar.id)
    )
    local.register_service(
        parse_service({"name": "db", "port": 5432, "connect": {"sidecar_service": {}}})
    )
    assert local.service("db-sidecar-proxy").port == 21001
    # Re-registration keeps the port, even after the other sidecar moved on.
    _, again = local.register_service(
        parse_service(web(tags=["x"], connect={"sidecar_service": {}}))
    )
    assert again.port == 21000
    assert [s.service.id for s in queries.health_service(store, "web", connect=True).value] == [
        "web-sidecar-proxy"
    ]
    # Deregistering the parent removes its sidecar and the sidecar's checks.
    local.deregister_service("web")
    assert "web-sidecar-proxy" not in local.services()
    assert not [c for c in local.checks().values() if c.service_id == "web-sidecar-proxy"]
    _, back = local.register_service(parse_service(web(connect={"sidecar_service": {}})))
    assert back.port == 21000


def test_LocalState_rejected_registration_changes_nothing() -> None:
    local, store = make(sidecar_ports=(21000, 21000))
    local.register_service(
        parse_service({"name": "a", "port": 1, "connect": {"sidecar_service": {}}})
    )
    before_services, before_checks, before_index = (
        dict(local.services()),
        dict(local.checks()),
        store.index,
    )
    with pytest.raises(
        InvalidRequest, match="none left in the configured range \\[21000, 21000\\]"
    ):
        local.register_service(parse_service({"name": "b", "port": 2, "check": {"ttl": "5s"},
                                              "connect": {"sidecar_service": {}}}))  # fmt: skip
    assert dict(local.services()) == before_services
    assert dict(local.checks()) == before_checks
    assert store.index == before_index


def test_LocalState_replace_existing_checks_semantics() -> None:
    local, _ = make()
    local.register_service(
        parse_service(web(checks=[{"id": "a", "ttl": "5s"}, {"id": "b", "ttl": "5s"}]))
    )
    local.register_service(parse_service(web(checks=[{"id": "a", "ttl": "5s"}])))
    assert {"a", "b"} <= set(local.checks())  # default: old checks kept
    local.register_service(
        parse_service(web(checks=[{"id": "a", "ttl": "5s"}])), replace_existing_checks=True
    )
    assert set(local.checks()) == {"a"}


def test_LocalState_check_registration_and_ttl_updates() -> None:
    clock = StepClock()
    local, store = make(clock=clock)
    with pytest.raises(InvalidRequest, match='ServiceID "web" does not exist'):
        local.register_check(parse_check({"name": "mem", "ttl": "10s", "service_id": "web"}))
    local.register_service(parse_service(web()))
    local.register_check(parse_check({"name": "mem", "ttl": "10s", "service_id": "web"}))
    assert local.check_state("mem").status is Health.CRITICAL
    local.update_ttl("mem", Health.PASSING, "fine")
    assert (local.check_state("mem").status, local.check_state("mem").output) == (
        Health.PASSING,
        "fine",
    )
    (entry,) = queries.health_service(store, "web", passing=True).value
    assert entry.checks[-1].check.output == "fine"
    clock.now += 9.9
    assert local.expire_ttls(clock.now) == []
    clock.now += 0.2
    assert local.expire_ttls(clock.now) == ["mem"]
    assert local.check_state("mem").status is Health.CRITICAL
    assert local.check_state("mem").output == "TTL expired"
    with pytest.raises(NotFound):
        local.update_ttl("nope", Health.PASSING)
    local.register_check(parse_check({"name": "t", "tcp": "127.0.0.1:1", "interval": "1s"}))
    with pytest.raises(InvalidRequest, match='CheckID "t" does not have associated TTL'):
        local.update_ttl("t", Health.PASSING)
    local.deregister_check("mem")
    with pytest.raises(NotFound):
        local.deregister_check("mem")


def test_LocalState_output_truncated_and_unchanged_status_is_not_republished() -> None:
    local, store = make()
    local.register_check(parse_check({"name": "c", "ttl": "10s", "output_max_size": 8}))
    local.update_ttl("c", Health.WARNING, "x" * 100)
    assert local.check_state("c").output == "x" * 8
    index = store.index
    assert not local.set_check_status("c", Health.WARNING, "x" * 100)
    assert store.index == index


def test_LocalState_deregister_critical_service_after() -> None:
    clock = StepClock()
    local, _ = make(clock=clock)
    local.register_service(
        parse_service(web(check={"ttl": "5s", "deregister_critical_service_after": "30s"}))
    )
    assert local.next_deadline() == pytest.approx(clock.now + 5)
    clock.now += 29
    assert local.reap_critical(clock.now) == []
    local.update_ttl("service:web", Health.PASSING)  # recovery resets the critical timer
    clock.now += 10
    local.expire_ttls(clock.now)
    clock.now += 29
    assert local.reap_critical(clock.now) == []
    clock.now += 2
    assert local.reap_critical(clock.now) == ["web"]
    assert "web" not in local.services()


def test_LocalState_persistence_restores_everything(tmp_path: Path) -> None:
    local, _ = make(tmp_path)
    local.register_service(
        parse_service(web(check={"ttl": "10s"}, connect={"sidecar_service": {}}))
    )
    local.register_check(parse_check({"name": "node-check", "ttl": "1m"}))
    local.update_ttl("service:web", Health.WARNING, "slow")
    version = local.version
    again, store = make(tmp_path)
    assert again.node_id == local.node_id
    assert (tmp_path / NODE_ID_FILE).read_text().strip() == local.node_id
    assert dict(again.services()) == dict(local.services())
    assert dict(again.checks()) == dict(local.checks())
    assert again.check_state("service:web").status is Health.WARNING
    assert again.version > version
    assert again.is_sidecar("web-sidecar-proxy")
    # Port memory survives a restart, so the sidecar keeps 21000 after re-registering.
    again.deregister_service("web")
    third, _ = make(tmp_path)
    _, sidecar = third.register_service(parse_service(web(connect={"sidecar_service": {}})))
    assert sidecar.port == 21000
    assert store.entry("n1") is not None


def test_LocalState_dev_mode_writes_nothing(tmp_path: Path) -> None:
    local, _ = make(None)
    local.register_service(parse_service(web()))
    assert list(tmp_path.iterdir()) == []


def test_LocalState_corrupt_state_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_text("{not json")
    with pytest.raises(ConfigError, match="cannot load saved services and checks"):
        make(tmp_path)
    (tmp_path / STATE_FILE).unlink()
    (tmp_path / NODE_ID_FILE).write_text("garbage")
    with pytest.raises(ConfigError, match="does not hold a UUID"):
        make(tmp_path)


def test_LocalState_failed_persist_changes_nothing(tmp_path: Path) -> None:
    local, store = make(tmp_path)
    local.register_service(parse_service(web()))
    index, version = store.index, local.version
    # A directory where the state file should be makes the atomic rename fail.
    (tmp_path / STATE_FILE).unlink()
    (tmp_path / STATE_FILE).mkdir()
    (tmp_path / STATE_FILE / "blocker").write_text("x")
    with pytest.raises(OSError):
        local.register_service(parse_service({"name": "db"}))
    assert "db" not in local.services()
    assert (store.index, local.version) == (index, version)


WRITER = textwrap.dedent(
    """
    import sys
    from node.catalog.local import LocalState, NodeIdentity
    from node.catalog.parse import parse_service
    from node.catalog.store import CatalogStore

    local = LocalState(identity=NodeIdentity(name="n1", datacenter="dc1", address="127.0.0.1"),
                       store=CatalogStore(), data_dir=sys.argv[1])
    i = 0
    while True:
        local.register_service(parse_service({"name": f"svc{i}", "port": 1000 + i % 50000,
                                              "check": {"ttl": "30s"}}))
        print(i, flush=True)  # acknowledged: it is on disk
        i += 1
    """
)


def test_LocalState_sigkill_mid_write_loses_nothing_acknowledged(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path)],
        stdout=subprocess.PIPE,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        text=True,
    )
    assert proc.stdout is not None
    acknowledged = -1
    deadline = time.monotonic() + 30
    try:
        while acknowledged < 150 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            acknowledged = int(line)
    finally:
        proc.send_signal(signal.SIGKILL)
        # Lines written before the kill were acknowledged too.
        rest = proc.stdout.read()
        proc.wait(timeout=10)
    for line in rest.split():
        acknowledged = max(acknowledged, int(line))
    assert acknowledged >= 150, "writer did not make progress"
    local, _ = make(tmp_path)
    names = set(local.services())
    missing = [i for i in range(acknowledged + 1) if f"svc{i}" not in names]
    assert missing == []
    assert f"service:svc{acknowledged}" in local.checks()


def test_LocalState_explicit_registration_of_sidecar_id_is_not_owned_by_parent() -> None:
    local, _ = make()
    local.register_service(parse_service(web(connect={"sidecar_service": {}})))
    local.register_service(
        parse_service(
            {
                "name": "custom",
                "id": "web-sidecar-proxy",
                "kind": "connect-proxy",
                "port": 22000,
                "proxy": {"destination_service_name": "web"},
            }
        )  # fmt: skip
    )
    assert not local.is_sidecar("web-sidecar-proxy")
    local.deregister_service("web")
    assert "web-sidecar-proxy" in local.services()


def _config(*names: str) -> tuple[ServiceDefinition, ...]:
    return tuple(parse_service({"name": n, "port": 80, "check": {"ttl": "30s"}}) for n in names)


def test_LocalState_service_removed_from_config_is_gone_after_restart(tmp_path: Path) -> None:
    local, _ = make(tmp_path)
    local.load_config_services(
        _config("db") + (parse_service(web(connect={"sidecar_service": {}})),)
    )
    assert local.source("web") is local.source("web-sidecar-proxy") is ServiceSource.CONFIG
    again, store = make(tmp_path)
    assert set(again.services()) == {"db", "web", "web-sidecar-proxy"}  # restored first
    again.load_config_services(_config("db"))
    assert set(again.services()) == {"db"}
    assert set(again.checks()) == {"service:db"}
    entry = store.entry("n1")
    assert entry is not None and set(entry.record.services) == {"db"}
    assert set(make(tmp_path)[0].services()) == {"db"}


def test_LocalState_api_services_survive_config_changes(tmp_path: Path) -> None:
    local, _ = make(tmp_path)
    local.load_config_services(_config("db", "cache"))
    local.register_service(parse_service(web(connect={"sidecar_service": {}})))
    # Re-registered through the API: now the API's, so the config no longer owns it.
    local.register_service(_config("cache")[0])
    assert local.source("web") is ServiceSource.API
    assert local.source("cache") is ServiceSource.API
    again, _ = make(tmp_path)
    assert again.source("cache") is ServiceSource.API and again.source("db") is ServiceSource.CONFIG
    again.load_config_services(())
    assert set(again.services()) == {"web", "web-sidecar-proxy", "cache"}
    # A config file that defines an API service takes it over again.
    again.load_config_services(_config("web"))
    assert again.source("web") is ServiceSource.CONFIG
    assert "web-sidecar-proxy" not in again.services()  # the config's web has no sidecar


def test_LocalState_state_file_without_sources_counts_every_service_as_api(
    tmp_path: Path,
) -> None:
    local, _ = make(tmp_path)
    local.load_config_services(_config("db"))
    doc = wire.unpack((tmp_path / STATE_FILE).read_bytes())
    del doc["sources"]
    (tmp_path / STATE_FILE).write_bytes(wire.pack(doc))
    again, _ = make(tmp_path)
    again.load_config_services(())
    assert again.source("db") is ServiceSource.API


CONFIG_THEN_API = textwrap.dedent(
    """
    import sys
    from node.catalog.local import LocalState, NodeIdentity
    from node.catalog.parse import parse_service
    from node.catalog.store import CatalogStore

    local = LocalState(identity=NodeIdentity(name="n1", datacenter="dc1", address="127.0.0.1"),
                       store=CatalogStore(), data_dir=sys.argv[1])
    local.load_config_services((parse_service({"name": "from-config", "port": 1}),
                                parse_service({"name": "dropped", "port": 2})))
    local.register_service(parse_service({"name": "from-api", "port": 3}))
    print("acknowledged", flush=True)
    sys.stdin.read()  # wait to be killed
    """
)


def test_LocalState_sigkill_restart_keeps_config_and_api_services(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", CONFIG_THEN_API, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        text=True,
    )
    assert proc.stdout is not None
    try:
        line = proc.stdout.readline()  # bounded: the child exits if it fails
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert line.strip() == "acknowledged"
    local, _ = make(tmp_path)
    assert set(local.services()) == {"from-config", "dropped", "from-api"}
    local.load_config_services((parse_service({"name": "from-config", "port": 1}),))
    assert set(local.services()) == {"from-config", "from-api"}
    assert local.source("from-config") is ServiceSource.CONFIG
    assert local.source("from-api") is ServiceSource.API


def test_LocalState_check_removed_from_a_config_service_is_gone_api_checks_stay(
    tmp_path: Path,
) -> None:
    two_checks = web(checks=[{"id": "a", "ttl": "5s"}, {"id": "b", "ttl": "5s"}])
    local, _ = make(tmp_path)
    local.load_config_services((parse_service(two_checks),))
    local.register_check(
        parse_check({"id": "api-mem", "name": "mem", "ttl": "9s", "service_id": "web"})
    )
    again, _ = make(tmp_path)
    again.load_config_services((parse_service(web(checks=[{"id": "a", "ttl": "5s"}])),))
    assert set(again.checks()) == {"a", "api-mem"}
    assert set(make(tmp_path)[0].checks()) == {"a", "api-mem"}


def test_LocalState_unchanged_config_at_restart_writes_and_publishes_nothing(
    tmp_path: Path,
) -> None:
    config = _config("db") + (parse_service(web(connect={"sidecar_service": {}})),)
    make(tmp_path)[0].load_config_services(config)
    again, store = make(tmp_path)
    saved, version, index = (tmp_path / STATE_FILE).read_bytes(), again.version, store.index
    again.load_config_services(config)
    assert (tmp_path / STATE_FILE).read_bytes() == saved
    assert (again.version, store.index) == (version, index)
