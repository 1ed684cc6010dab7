"""Catalog values: raw and wire round trips, garbage from peers, field correspondence."""

from __future__ import annotations

import dataclasses

import pytest

from node.catalog.parse import parse_service
from node.catalog.sidecar import SidecarPorts, expand_sidecar
from node.catalog.values import (
    CheckKind,
    CheckState,
    Health,
    NodeRecord,
    ServiceDefinition,
    ServiceInstance,
)
from node.errors import RemoteProtocolError


def test_service_definition_round_trips_through_to_raw() -> None:
    upstream = {"destination_name": "api", "local_bind_port": 1, "config": {"a": [1, {"b": 2}]}}
    web = parse_service(
        {
            "name": "web",
            "id": "web1",
            "port": 8080,
            "tags": ["t"],
            "meta": {"m": "1"},
            "connect": {"sidecar_service": {"proxy": {"upstreams": [upstream]}}},
        }
    )
    parent, sidecar = expand_sidecar(web, allocate_port=SidecarPorts().allocate)
    for svc in (parent, sidecar):
        assert parse_service(svc.to_raw()) == svc
    gw = parse_service(
        {
            "name": "gw",
            "kind": "mesh-gateway",
            "port": 443,
            "tagged_addresses": {"wan": {"address": "1.2.3.4", "port": 8443}},
            "proxy": {"config": {"envoy_mesh_gateway_no_default_bind": True}},
        }
    )
    assert parse_service(gw.to_raw()) == gw


def test_node_record_wire_round_trip_and_garbage() -> None:
    svc = parse_service({"name": "web", "port": 80, "connect": {"native": True}}).instance()
    chk = CheckState(
        id="c",
        name="c",
        kind=CheckKind.TTL,
        status=Health.WARNING,
        output="o",
        service_id="web",
        service_name="web",
    )
    rec = NodeRecord(
        name="n1",
        node_id="id",
        address="10.0.0.1",
        datacenter="dc1",
        tagged_addresses={"wan": "1.1.1.1"},
        services={"web": svc},
        checks={"c": chk},
        version=7,
    )
    back = NodeRecord.from_wire(rec.to_wire())
    assert back.services["web"] == svc and back.checks["c"] == chk and back.version == 7
    assert dict(back.tagged_addresses) == {"wan": "1.1.1.1"}
    for bad in (
        None,
        [],
        {"name": "n"},
        {**rec.to_wire(), "version": "1"},
        {**rec.to_wire(), "services": [{"name": 3}]},
        {**rec.to_wire(), "checks": [{"id": "c", "status": "weird"}]},
    ):
        with pytest.raises(RemoteProtocolError):
            NodeRecord.from_wire(bad)
    with pytest.raises(RemoteProtocolError):
        ServiceInstance.from_wire({"name": "x", "checks": []})


def test_ServiceDefinition_instance_copies_every_instance_field() -> None:
    definition = parse_service(
        {"name": "web", "port": 80, "tags": ["a"], "meta": {"k": "v"}, "address": "10.0.0.1",
         "connect": {"native": True}, "check": {"ttl": "5s"}}
    )  # fmt: skip
    instance = definition.instance()
    names = [f.name for f in dataclasses.fields(ServiceInstance)]
    assert set(names) <= {f.name for f in dataclasses.fields(ServiceDefinition)}
    assert all(getattr(instance, n) == getattr(definition, n) for n in names)
