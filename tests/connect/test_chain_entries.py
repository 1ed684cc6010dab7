"""service-resolver, service-router, service-splitter: HCL (both styles), JSON, wire, bootstrap, CLI."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from node.cli.main import main
from node.config.agent import load, load_config_entry_document, read_source
from node.connect.chainentries import (
    ResolverFailover,
    ResolverRedirect,
    ResolverSubset,
    ServiceResolver,
    ServiceRouter,
    ServiceSplitter,
    Split,
)
from node.connect.entries import entry_to_wire, parse_config_entry
from node.errors import ConfigError, InvalidRequest
from tests.helpers.cluster import Cluster
from tests.helpers.poll import wait_for

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "config"


def _file(name: str) -> Any:
    path = str(FIXTURES / name)
    return load_config_entry_document(read_source(path), path)


def test_resolver_hcl2_style() -> None:
    entry = _file("service-resolver.hcl")
    assert entry == ServiceResolver(
        name="api",
        default_subset="v1",
        connect_timeout=15.0,
        subsets={
            "v1": ResolverSubset(filter="Service.Meta.version == v1"),
            "v2": ResolverSubset(filter="Service.Meta.version == v2", only_passing=True),
        },
        failover={"*": ResolverFailover(datacenters=("dc2", "dc3"))},
    )


def test_resolver_hcl1_blocks_and_snake_case() -> None:
    entry = _file("service-resolver-hcl1.hcl")
    assert isinstance(entry, ServiceResolver)
    assert entry.redirect == ResolverRedirect(service="db", datacenter="dc2")
    assert entry.subsets["v1"].filter == "Service.Meta.version == v1"


def test_splitter_and_router_files() -> None:
    splitter = _file("service-splitter.hcl")
    assert splitter == ServiceSplitter(
        name="web",
        splits=(Split(weight=90, service_subset="v1"), Split(weight=10, service_subset="v2")),
    )
    router = _file("service-router.hcl")
    assert isinstance(router, ServiceRouter)
    (route,) = router.routes
    assert route.match is not None and route.match.path_prefix == "/admin"
    assert route.match.header[0].exact == "1"
    assert route.destination.service == "admin" and route.destination.request_timeout == 2.0


@pytest.mark.parametrize(
    "name",
    ["service-resolver.hcl", "service-resolver-hcl1.hcl", "service-splitter.hcl",
     "service-router.hcl"],
)  # fmt: skip
def test_wire_round_trip(name: str) -> None:
    entry = _file(name)
    assert parse_config_entry(json.loads(json.dumps(entry_to_wire(entry)))) == entry


def test_splitter_weights_round_to_hundredths() -> None:
    entry = parse_config_entry(
        {"Kind": "service-splitter", "Name": "w",
         "Splits": [{"Weight": 33.331, "Service": "a"}, {"Weight": 33.332, "Service": "b"},
                    {"Weight": 33.337, "Service": "c"}]}
    )  # fmt: skip
    assert isinstance(entry, ServiceSplitter)
    assert [s.weight for s in entry.splits] == [33.33, 33.33, 33.34]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"Kind": "service-resolver"}, "Name"),
        ({"Kind": "service-resolver", "Name": "a", "Subsets": {"v1": {"Filtr": "x"}}},
         "Subsets.v1.Filtr"),
        ({"Kind": "service-resolver", "Name": "a", "Failover": {"v1": {"Service": "b"}}},
         'Failover["v1"]'),
        ({"Kind": "service-resolver", "Name": "a", "Subsets": {"v1": {}},
          "Redirect": {"Service": "a", "ServiceSubset": "v2"}}, "Redirect.ServiceSubset"),
        ({"Kind": "service-resolver", "Name": "a", "Redirect": {"ServiceSubset": "v1"}},
         "Redirect.ServiceSubset"),
        ({"Kind": "service-resolver", "Name": "a", "ConnectTimeout": "soon"}, "ConnectTimeout"),
        ({"Kind": "service-splitter", "Name": "a", "Splits": [{"Weight": "x"}]},
         "Splits[0].Weight"),
        ({"Kind": "service-splitter", "Name": "a",
          "Splits": [{"Weight": 50, "Service": "b"}, {"Weight": 50, "Service": "b"}]}, "Splits[1]"),
        ({"Kind": "service-router", "Name": "a",
          "Routes": [{"Match": {"HTTP": {"Header": [{"Name": "x"}]}}}]},
         "Routes[0].Match.HTTP.Header[0]"),
        ({"Kind": "service-router", "Name": "a",
          "Routes": [{"Match": {"HTTP": {"Methods": ["get", "GET"]}}}]},
         "Routes[0].Match.HTTP.Methods"),
        ({"Kind": "service-router", "Name": "a",
          "Routes": [{"Destination": {"PrefixRewrite": "/x"}}]},
         "Routes[0].Destination.PrefixRewrite"),
        ({"Kind": "service-router", "Name": "a",
          "Routes": [{"Match": {"HTTP": {"PathExact": "/a", "PathRegex": "b"}}}]},
         "Routes[0].Match.HTTP"),
        ({"Kind": "service-resolver", "Name": "a",
          "Subsets": {"v1": {"Filter": "Service.Meta.version =="}}}, "Subsets.v1.Filter"),
        ({"Kind": "service-resolver", "Name": "a",
          "Subsets": {"v1": {"Filter": "Service.Nope == x"}}}, "Subsets.v1.Filter"),
    ],
)  # fmt: skip
def test_every_error_names_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        parse_config_entry(body)
    assert err.value.field == field, str(err.value)


def test_bootstrap_entries_in_agent_config(tmp_path: Path) -> None:
    conf = tmp_path / "agent.hcl"
    conf.write_text(
        'datacenter = "dc1"\ndata_dir = "' + str(tmp_path) + '"\n'
        "config_entries {\n  bootstrap = [\n"
        '    { Kind = "service-resolver", Name = "api",\n'
        '      Failover = { "*" = { Datacenters = ["dc2"] } } },\n'
        '    { Kind = "service-defaults", Name = "api", Protocol = "http" },\n'
        "  ]\n}\n"
    )
    cfg = load([str(conf)], log_warnings=False)
    kinds = [e.kind for e in cfg.config_entries_bootstrap]
    assert kinds == ["service-resolver", "service-defaults"]
    conf.write_text(
        'config_entries { bootstrap = [ { Kind = "service-resolver", Name = "api",\n'
        '  DefaultSubset = "v9" } ] }\n'
    )
    with pytest.raises(ConfigError, match='DefaultSubset "v9" is not a valid subset'):
        load([str(conf)], log_warnings=False)


async def _cli(capsys: Any, *argv: str) -> tuple[int, str, str]:
    code = await asyncio.to_thread(main, list(argv), {})
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.timeout(60)
async def test_cli_config_write_read_list_delete(tmp_path: Path, capsys: Any) -> None:
    async with Cluster(tmp_path) as cluster:
        s1 = await cluster.start("s1", server=True)
        await wait_for(lambda: s1.connect.roots(), "CA bootstrapped", timeout=10)
        host, port = s1.bound["http"]
        addr = ["-http-addr", f"{host}:{port}"]
        path = str(FIXTURES / "service-resolver.hcl")
        code, out, _ = await _cli(capsys, "config", "write", path, *addr)
        assert (code, out.strip()) == (0, "Config entry written: service-resolver/api")
        code, out, _ = await _cli(
            capsys, "config", "read", "-kind", "service-resolver", "-name", "api", *addr
        )
        got = json.loads(out)
        assert code == 0 and got["Failover"] == {"*": {"Datacenters": ["dc2", "dc3"]}}
        assert got["ConnectTimeout"] == "15s" and got["DefaultSubset"] == "v1"
        code, out, _ = await _cli(capsys, "config", "list", "-kind", "service-resolver", *addr)
        assert (code, out.strip()) == (0, "api")
        router = str(FIXTURES / "service-router.hcl")
        code, _, err = await _cli(capsys, "config", "write", router, *addr)
        assert code == 1 and 'uses a protocol "tcp" that does not permit advanced' in err
        code, out, _ = await _cli(
            capsys, "config", "delete", "-kind", "service-resolver", "-name", "api", *addr
        )
        assert (code, out.strip()) == (0, "Config entry deleted: service-resolver/api")
