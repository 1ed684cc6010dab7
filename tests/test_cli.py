"""The meshnode CLI: command table, flags, output tables, errors; and against a live node."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from node.cli import main as cli

FIXTURES = Path(__file__).parent / "fixtures" / "config"


def test_format_table_aligns_columns_like_consul() -> None:
    text = cli.format_table(
        ["Node", "Address", "Status"], [["n1", "127.0.0.1:8301", "alive"], ["longer", "x", "y"]]
    )
    assert text.splitlines() == [
        "Node    Address         Status",
        "n1      127.0.0.1:8301  alive",
        "longer  x               y",
    ]


def test_http_addr_precedence_flag_then_meshnode_then_consul_env() -> None:
    with_flag = argparse.Namespace(http_addr="10.0.0.1:1")
    without = argparse.Namespace(http_addr=None)
    env = {"MESHNODE_HTTP_ADDR": "a:1", "CONSUL_HTTP_ADDR": "b:2"}
    assert cli.http_addr(with_flag, env) == "10.0.0.1:1"
    assert cli.http_addr(without, env) == "a:1"
    assert cli.http_addr(without, {"CONSUL_HTTP_ADDR": "b:2"}) == "b:2"
    assert cli.http_addr(without, {}) == "127.0.0.1:8500"


def test_parser_accepts_single_and_double_dash_flags() -> None:
    parser = cli.build_parser()
    one = parser.parse_args(
        ["agent", "-dev", "-node", "n1", "-http-port", "0", "-config-file", "a.hcl"]
    )
    two = parser.parse_args(
        ["agent", "--dev", "--node=n1", "--http-port", "0", "--config-dir", "d"]
    )
    assert one.dev and two.dev
    assert one.node_name == two.node_name == "n1"
    assert one.http_port == two.http_port == 0
    assert one.config_paths == ["a.hcl"] and two.config_paths == ["d"]


def test_agent_overrides_use_config_flag_names() -> None:
    args = cli.build_parser().parse_args(["agent", "-node", "n1", "-http-port", "0", "-server"])
    overrides = cli.agent_overrides(args)
    assert overrides["node"] == "n1"
    assert overrides["http-port"] == 0
    assert overrides["server"] is True
    assert overrides["datacenter"] is None  # not given: config keeps its value


def test_every_command_in_the_table_has_a_parser() -> None:
    parser = cli.build_parser()
    for command in cli.COMMANDS:
        argv = [*command.path]
        if command.path in {("validate",)}:
            argv.append("x.hcl")
        if command.path[0] == "services":
            argv.append("web")
        # Commands with required arguments get a sample of them.
        argv += {
            ("join",): ["127.0.0.1"], ("force-leave",): ["n1"], ("keyring",): ["-list"],
            ("connect", "ca", "set-config"): ["-config-file", "ca.json"],
            ("connect", "proxy-config"): ["web-sidecar-proxy"],
            ("intention", "create"): ["web", "db"], ("intention", "delete"): ["web", "db"],
            ("intention", "check"): ["web", "db"], ("config", "write"): ["e.hcl"],
            ("config", "read"): ["-kind", "proxy-defaults", "-name", "global"],
            ("config", "list"): ["-kind", "proxy-defaults"],
            ("config", "delete"): ["-kind", "proxy-defaults", "-name", "global"],
        }.get(command.path, [])  # fmt: skip
        args = parser.parse_args(argv)
        assert args.command is command


def test_version_prints_and_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["version"]) == 0
    assert capsys.readouterr().out.startswith("meshnode v")


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["frobnicate"]) == 2
    assert "invalid choice" in capsys.readouterr().err


def test_no_command_prints_help_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert "usage" in capsys.readouterr().err


def test_validate_good_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    conf = tmp_path / "a.hcl"
    conf.write_text(f'data_dir = "{tmp_path}"\nnode_name = "n1"\n')
    assert cli.main(["validate", str(conf)]) == 0
    assert "Configuration is valid!" in capsys.readouterr().out


def test_validate_bad_file_names_file_and_key(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    conf = tmp_path / "bad.hcl"
    conf.write_text(f'data_dir = "{tmp_path}"\nports {{ http = "abc" }}\n')
    assert cli.main(["validate", str(conf)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0  # one line
    assert "bad.hcl" in err and "ports.http" in err


def test_unreachable_node_is_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    # Port 9 (discard) on loopback is closed in test environments: connection refused.
    assert cli.main(["members", "-http-addr", "127.0.0.1:9"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("Error: cannot reach meshnode at http://127.0.0.1:9")
    assert "\n" not in err


def test_services_register_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        cli.main(["services", "register", "/nonexistent/web.hcl", "-http-addr", "127.0.0.1:9"]) == 1
    )
    assert "/nonexistent/web.hcl" in capsys.readouterr().err


def test_read_service_file_returns_raw_blocks() -> None:
    services = cli.read_service_file(str(FIXTURES / "inline-sidecar.hcl"))
    assert len(services) == 1
    assert services[0]["name"] == "web"
    assert (
        services[0]["connect"]["sidecar_service"]["proxy"]["upstreams"][0]["local_bind_port"]
        == 10000
    )


def test_key_value_formatter_appends_extra_context() -> None:
    import logging

    record = logging.makeLogRecord(
        {"name": "node.agent", "levelname": "INFO", "msg": "http server listening"}
    )
    record.addr = "127.0.0.1:8500"
    record.reason = "two words"
    text = cli.KeyValueFormatter().format(record)
    assert text.endswith('node.agent: http server listening addr=127.0.0.1:8500 reason="two words"')


# ---------------------------------------------------------------------------- against a node


@pytest.fixture
async def node_addr(aiohttp_server: Any) -> str:
    """A dev agent's API served by an aiohttp test server; returns host:port."""
    from node.agent.agent import Agent
    from node.api.app import make_app
    from node.config.agent import load

    agent = Agent(load([], dev=True, overrides={"node": "cli1", "http-port": 0}))
    server = await aiohttp_server(make_app(agent))
    return f"{server.host}:{server.port}"


async def _run_cli(argv: list[str], environ: dict[str, str] | None = None) -> int:
    # The CLI's HTTP client is synchronous: run it off the loop that serves the API.
    return await asyncio.to_thread(cli.main, argv, environ or {})


async def test_members_table(node_addr: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert await _run_cli(["members", "-http-addr", node_addr]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "Node",
        "Address",
        "Status",
        "Type",
        "Build",
        "Protocol",
        "DC",
        "Segment",
    ]
    assert lines[1].split() == [
        "cli1",
        "127.0.0.1:8301",
        "alive",
        "server",
        "0.1.0",
        "2",
        "dc1",
        "<all>",
    ]
    # Columns line up: each header starts where its values start.
    assert lines[0].index("Address") == lines[1].index("127.0.0.1")


async def test_services_register_catalog_and_deregister(
    node_addr: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    env = {"MESHNODE_HTTP_ADDR": node_addr}
    path = str(FIXTURES / "inline-sidecar.hcl")
    assert await _run_cli(["services", "register", path], env) == 0
    assert capsys.readouterr().out.strip() == "Registered service: web"
    assert await _run_cli(["catalog", "services"], env) == 0
    assert capsys.readouterr().out.split() == ["web", "web-sidecar-proxy"]
    json_file = tmp_path / "db.json"
    json_file.write_text(
        _json({"service": {"name": "db", "id": "db1", "port": 5432, "tags": ["primary"]}})
    )
    assert (
        await _run_cli(["services", "register", str(json_file)], {"CONSUL_HTTP_ADDR": node_addr})
        == 0
    )
    capsys.readouterr()
    assert await _run_cli(["catalog", "services", "-tags"], env) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert ["db", "primary"] in rows
    assert await _run_cli(["services", "deregister", str(json_file)], env) == 0
    assert capsys.readouterr().out.strip() == "Deregistered service: db1"
    assert await _run_cli(["services", "deregister", "web"], env) == 0
    capsys.readouterr()
    assert await _run_cli(["catalog", "services"], env) == 0
    assert capsys.readouterr().out.split() == []


async def test_services_deregister_unknown_fails_with_one_line(
    node_addr: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await _run_cli(["services", "deregister", "ghost", "-http-addr", node_addr]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert "HTTP 404" in err and "ghost" in err


async def test_services_register_invalid_file_names_key(
    node_addr: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.hcl"
    bad.write_text('service {\n  name = "x"\n  port = "eighty"\n}\n')
    assert await _run_cli(["services", "register", str(bad), "-http-addr", node_addr]) == 1
    err = capsys.readouterr().err
    assert "bad.hcl" in err and "port" in err


async def test_catalog_nodes_and_datacenters(
    node_addr: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await _run_cli(["catalog", "nodes", "-http-addr", node_addr]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["Node", "ID", "Address", "DC"]
    assert lines[1].split()[0] == "cli1" and lines[1].split()[2:] == ["127.0.0.1", "dc1"]
    assert len(lines[1].split()[1]) == 8  # short node ID, as Consul prints
    assert await _run_cli(["catalog", "datacenters", "-http-addr", node_addr]) == 0
    assert capsys.readouterr().out.split() == ["dc1"]


def _json(value: Any) -> str:
    return json.dumps(value)
