"""node.config: seed examples, merge rules, defaults, flags, warnings and every error message."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from node.catalog.values import MeshGatewayMode, ServiceKind
from node.config.agent import (
    AgentConfig,
    IntentionPolicy,
    Ports,
    load,
    load_config_entry_document,
    load_services_document,
    validate,
)
from node.config.duration import parse_go_duration
from node.connect.entries import ProxyDefaults, ServiceDefaults
from node.errors import ConfigError

FIXTURES = Path(__file__).parent / "fixtures" / "config"
CLUSTER_CONFIGS = Path(__file__).parent.parent / "cluster-configs"
KEY_32 = "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s="
KEY_16 = "AAAAAAAAAAAAAAAAAAAAAA=="

WriteFile = Callable[..., str]


@pytest.fixture
def write(tmp_path: Path) -> WriteFile:
    """Write a config file under tmp_path; return its path."""

    def _write(name: str, text: str) -> str:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return str(path)

    return _write


def _error(paths: list[str], **kwargs: object) -> str:
    with pytest.raises(ConfigError) as exc:
        load(paths, **kwargs)  # type: ignore[arg-type]
    return str(exc.value)


def _error_in(write: WriteFile, text: str, name: str = "cluster.hcl") -> str:
    """The message for a one-file config, with the tmp directory cut from the file name."""
    path = write(name, text)
    return _error([path], dev=True).replace(str(Path(path).parent) + "/", "")


# --- the seed document: every HCL example means what the text says ----------------------------


def test_seed_proxy_defaults_enables_local_gateways_globally() -> None:
    path = FIXTURES / "proxy-defaults.hcl"
    entry = load_config_entry_document(path.read_text(), str(path))
    assert entry == ProxyDefaults(name="global", mesh_gateway=MeshGatewayMode.LOCAL)


def test_seed_service_defaults_enables_local_gateways_for_web() -> None:
    path = FIXTURES / "service-defaults.hcl"
    entry = load_config_entry_document(path.read_text(), str(path))
    assert entry == ServiceDefaults(name="web", mesh_gateway=MeshGatewayMode.LOCAL)


def test_seed_proxy_registration_remote_mode_for_the_instance() -> None:
    (svc,) = load([str(FIXTURES / "sidecar-remote.hcl")], dev=True).services
    assert (svc.name, svc.kind, svc.port) == ("web-sidecar-proxy", ServiceKind.CONNECT_PROXY, 8181)
    assert svc.proxy.destination_service_name == "web"
    assert svc.proxy.mesh_gateway is MeshGatewayMode.REMOTE
    (up,) = svc.proxy.upstreams
    assert (up.destination_name, up.datacenter, up.local_bind_port) == ("api", "secondary", 10000)
    assert up.mesh_gateway is MeshGatewayMode.DEFAULT  # inherits the instance's remote


def test_seed_inline_sidecar_remote_mode() -> None:
    (svc,) = load([str(FIXTURES / "inline-sidecar.hcl")], dev=True).services
    assert (svc.name, svc.kind, svc.port) == ("web", ServiceKind.TYPICAL, 8181)
    proxy = svc.sidecar.proxy
    assert proxy.mesh_gateway is MeshGatewayMode.REMOTE
    (up,) = proxy.upstreams
    assert (up.destination_name, up.datacenter, up.local_bind_port) == ("api", "secondary", 10000)


def test_seed_per_upstream_modes_hcl1_blocks_in_list_elements() -> None:
    (svc,) = load([str(FIXTURES / "upstream-modes.hcl")], dev=True).services
    assert svc.proxy.mesh_gateway is MeshGatewayMode.DEFAULT
    modes = [(u.destination_name, u.local_bind_port, u.mesh_gateway) for u in svc.proxy.upstreams]
    assert modes == [
        ("api", 10000, MeshGatewayMode.REMOTE),
        ("db", 10001, MeshGatewayMode.LOCAL),
        ("logging", 10002, MeshGatewayMode.NONE),
    ]


def test_seed_service_files_load_for_services_register() -> None:
    path = FIXTURES / "upstream-modes.hcl"
    (svc,) = load_services_document(path.read_text(), str(path))
    assert [u.mesh_gateway for u in svc.proxy.upstreams] == [
        MeshGatewayMode.REMOTE,
        MeshGatewayMode.LOCAL,
        MeshGatewayMode.NONE,
    ]


def test_cluster_configs_all_validate() -> None:
    files = sorted(CLUSTER_CONFIGS.glob("*.hcl"))
    assert files, "cluster-configs/ holds the demo federation"
    for path in files:
        config = validate([str(path)])
        assert config.warnings == (), path


# --- defaults ------------------------------------------------------------------------------


def test_load_dev_defaults() -> None:
    config = load([], dev=True)
    assert config.dev and config.server
    assert (config.datacenter, config.primary_datacenter) == ("dc1", "dc1")
    assert (config.bind_addr, config.advertise_addr, config.client_addr) == ("127.0.0.1",) * 3
    assert config.data_dir is None
    assert config.ports == Ports()
    assert config.ports.http == 8500 and config.ports.grpc == -1
    assert config.connect.enabled and config.connect.ca_provider == "consul"
    assert config.connect.default_intention_policy is IntentionPolicy.ALLOW
    assert (config.retry_interval, config.reconnect_timeout) == (30.0, 72 * 3600.0)
    assert config.log_level == "INFO" and config.encrypt is None and config.encrypt_key is None
    assert config.node_name  # the host name
    assert config.leave_on_terminate is False  # a server


def test_load_non_dev_defaults_and_advertise_rules(write: WriteFile) -> None:
    config = load([write("a.hcl", 'data_dir = "/d"\ndatacenter = "East"\n')])
    assert not config.dev and not config.server
    assert config.datacenter == config.primary_datacenter == "east"  # lowercased, as Consul
    assert config.bind_addr == "0.0.0.0"
    assert config.advertise_addr == config.advertise_addr_wan == "127.0.0.1"
    assert config.leave_on_terminate is True  # a client
    config = load([write("b.hcl", 'data_dir = "/d"\nbind_addr = "127.0.3.4"\n')])
    assert config.advertise_addr == config.advertise_addr_wan == "127.0.3.4"
    text = 'data_dir = "/d"\nadvertise_addr = "10.1.1.1"\nadvertise_addr_wan = "192.0.2.1"\n'
    config = load([write("c.hcl", text)])
    assert (config.advertise_addr, config.advertise_addr_wan) == ("10.1.1.1", "192.0.2.1")


def test_load_full_config(write: WriteFile) -> None:
    text = f"""
    datacenter = "dc2"
    primary_datacenter = "dc1"
    node_name = "n1"
    node_id = "ADF4238A-882B-9DDC-4A9D-5B6758E4159E"
    data_dir = "/tmp/x"
    server = true
    bootstrap_expect = 1
    ports {{
      http = 0
      serf_lan = 8701
      serf_wan = 8702
      server = 8700
      grpc = 8502
      sidecar_min_port = 22000
      sidecar_max_port = 22010
    }}
    retry_join_wan = ["127.0.1.1:8302"]
    retry_interval = "1m30s"
    retry_interval_wan = "500ms"
    encrypt = "{KEY_16}"
    encrypt_verify_incoming = false
    connect {{
      enabled = true
      default_intention_policy = "deny"
      ca_config {{
        leaf_cert_ttl = "24h"
      }}
    }}
    enable_central_service_config = true
    log_level = "warning"
    leave_on_terminate = true
    reconnect_timeout = "8h"
    reconnect_timeout_wan = "96h"
    """
    config = load([write("full.hcl", text)])
    assert config.primary_datacenter == "dc1" and config.node_id.startswith("adf4238a")
    assert config.ports == Ports(
        http=0, serf_lan=8701, serf_wan=8702, server=8700, grpc=8502,
        sidecar_min_port=22000, sidecar_max_port=22010,
    )  # fmt: skip
    assert config.retry_join_wan == ("127.0.1.1:8302",)
    assert (config.retry_interval, config.retry_interval_wan) == (90.0, 0.5)
    assert config.encrypt_key == bytes(16)
    assert config.encrypt_verify_incoming is False and config.encrypt_verify_outgoing is True
    assert config.connect.default_intention_policy is IntentionPolicy.DENY
    assert dict(config.connect.ca_config) == {"leaf_cert_ttl": "24h"}
    assert config.log_level == "WARN" and config.enable_central_service_config
    assert (config.reconnect_timeout, config.reconnect_timeout_wan) == (8 * 3600.0, 96 * 3600.0)


def test_load_json_file(write: WriteFile) -> None:
    path = write(
        "agent.json",
        '{"data_dir": "/d", "ports": {"http": 8501}, "service": {"name": "web", "port": 80},'
        ' "config_entries": {"bootstrap": [{"Kind": "service-defaults", "Name": "web",'
        ' "MeshGateway": {"Mode": "remote"}}]}}',
    )
    config = load([path])
    assert config.ports.http == 8501
    assert [s.name for s in config.services] == ["web"]
    assert config.config_entries_bootstrap == (
        ServiceDefaults(name="web", mesh_gateway=MeshGatewayMode.REMOTE),
    )


def test_load_service_blocks_and_services_list(write: WriteFile) -> None:
    text = (
        'service { name = "a" }\nservice { name = "b" }\n'
        'services = [{ name = "c" }, { name = "d" }]\n'
    )
    config = load([write("s.hcl", text)], dev=True)
    assert [s.name for s in config.services] == ["a", "b", "c", "d"]


def test_load_config_entries_bootstrap_blocks(write: WriteFile) -> None:
    text = (
        'config_entries {\n  bootstrap {\n    Kind = "proxy-defaults"\n    Name = "global"\n'
        '    MeshGateway {\n      Mode = "local"\n    }\n  }\n}\n'
    )
    config = load([write("e.hcl", text)], dev=True)
    assert config.config_entries_bootstrap == (
        ProxyDefaults(name="global", mesh_gateway=MeshGatewayMode.LOCAL),
    )


# --- merging --------------------------------------------------------------------------------


def test_load_merge_order_later_files_win_lists_append(write: WriteFile) -> None:
    a = write("a.hcl", 'data_dir = "/a"\nnode_name = "a"\nretry_join = ["x"]\nports { http = 1 }\n')
    b = write("b.hcl", 'node_name = "b"\nretry_join = ["y"]\nports { serf_lan = 2 }\n')
    config = load([a, b])
    assert (config.node_name, config.data_dir) == ("b", "/a")
    assert config.retry_join == ("x", "y")
    assert (config.ports.http, config.ports.serf_lan) == (1, 2)  # sections merge key by key
    assert config.sources == (a, b)
    assert load([b, a]).node_name == "a"


def test_load_config_dir_lexical_order_hcl_and_json_only() -> None:
    config = load([str(FIXTURES / "conf.d")])
    assert [Path(s).name for s in config.sources] == [
        "00-base.hcl",
        "10-override.json",
        "20-last.hcl",
    ]
    assert config.node_name == "override"
    assert config.retry_join == ("10.0.0.1", "10.0.0.2", "10.0.0.3")
    assert (config.ports.http, config.ports.serf_lan) == (8600, 9301)
    assert [s.name for s in config.services] == ["web", "db"]
    assert config.log_level == "DEBUG"


def test_load_overrides_apply_last(write: WriteFile) -> None:
    path = write("a.hcl", 'data_dir = "/a"\nnode_name = "a"\nretry_join = ["x"]\n')
    flags = {
        "node": "flagged",
        "datacenter": "dc9",
        "data-dir": "/flag",
        "bind": "127.0.0.2",
        "client": "127.0.0.3",
        "http_port": "18500",
        "-server": "true",
        "retry-join": "z",
        "encrypt": None,  # flag not given
    }
    config = load([path], overrides=flags)
    assert (config.node_name, config.datacenter, config.data_dir) == ("flagged", "dc9", "/flag")
    assert (config.bind_addr, config.advertise_addr, config.client_addr) == (
        "127.0.0.2",
        "127.0.0.2",
        "127.0.0.3",
    )
    assert config.ports.http == 18500 and config.server is True
    assert config.retry_join == ("x", "z")


def test_load_overrides_dev_flag() -> None:
    config = load([], overrides={"dev": True})
    assert config.dev and config.server and config.data_dir is None


# --- warnings for Consul-only keys ------------------------------------------------------------


def test_load_real_consul_file_warns_once_per_unimplemented_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = str(FIXTURES / "consul-agent.hcl")
    with caplog.at_level(logging.WARNING, logger="node.config"):
        config = load([path, path])  # the same keys twice: still one warning each
    assert config.warnings == tuple(
        f"{path}: {key}: accepted for Consul compatibility but not implemented by meshnode; ignored"
        for key in ("ui", "addresses", "telemetry.statsite_address", "performance", "acl")
    )
    assert [r.getMessage() for r in caplog.records] == list(config.warnings)
    assert config.server and config.ports.grpc == 8502 and config.bind_addr == "10.0.0.5"
    assert config.retry_join == ("10.0.0.6", "10.0.0.7") * 2


def test_validate_returns_warnings_without_logging(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="node.config"):
        config = validate([str(FIXTURES / "consul-agent.hcl")])
    assert len(config.warnings) == 5
    assert caplog.records == []


def test_load_consul_only_keys_are_matched_like_other_keys(write: WriteFile) -> None:
    config = load([write("a.hcl", 'data_dir = "/d"\nDNS_Config { Use_Cache = true }\n')])
    assert len(config.warnings) == 1 and "DNS_Config.Use_Cache" in config.warnings[0]


# --- errors: every class, exact messages -----------------------------------------------------


def test_error_unknown_key_did_you_mean(write: WriteFile) -> None:
    text = 'servce {\n  name = "web"\n}\n'
    assert (
        _error_in(write, text, "web.hcl")
        == 'web.hcl: servce: unknown key (did you mean "service"?)'
    )


def test_error_unknown_key_without_suggestion(write: WriteFile) -> None:
    assert _error_in(write, "frobnicate = 1\n") == "cluster.hcl: frobnicate: unknown key"


def test_error_unknown_nested_key(write: WriteFile) -> None:
    text = "ports {\n  htpp = 1\n}\n"
    assert _error_in(write, text) == 'cluster.hcl: ports.htpp: unknown key (did you mean "http"?)'
    text = "connect {\n  enable = true\n}\n"
    assert _error_in(write, text) == (
        'cluster.hcl: connect.enable: unknown key (did you mean "enabled"?)'
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('ports {\n  http = "abc"\n}\n', 'ports.http: expected an integer, got "abc"'),
        ('ports {\n  http = "8500"\n}\n', 'ports.http: expected an integer, got "8500"'),
        ("ports {\n  http = 1\n}\nports {\n  http = 2\n}\n", "ports: expected one block, got 2"),
        ("datacenter = \"" + "x" * 100 + "!\"\n", 'datacenter: expected a name of letters, digits, "-" and "_", got "' + "x" * 77 + '..."'),
        ("ports {\n  http = 8500.5\n}\n", "ports.http: expected an integer, got 8500.5"),
        ("ports = 5\n", "ports: expected a block, got 5"),
        ('server = "yes"\n', 'server: expected true or false, got "yes"'),
        ("datacenter = 1\n", "datacenter: expected a string, got 1"),
        ('retry_join = "10.0.0.1"\n', 'retry_join: expected a list of strings, got "10.0.0.1"'),
        ("retry_join = [1]\n", "retry_join: expected a list of strings, got a list"),
        ("retry_interval = 30\n", 'retry_interval: expected a duration like "30s" or "72h", got 30'),
        ("encrypt = true\n", "encrypt: expected a base64-encoded key (a string), got true"),
        ('services = { name = "x" }\n', "services: expected a list of service definitions, got an object"),
        ('service = "web"\n', 'service: expected a service definition (an object), got "web"'),
        ("config_entries {\n  bootstrap = 1\n}\n", "config_entries.bootstrap: expected a list of config entries, got 1"),
    ],
)  # fmt: skip
def test_error_wrong_type(write: WriteFile, text: str, message: str) -> None:
    assert _error_in(write, text) == f"cluster.hcl: {message}"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('log_level = "LOUD"\n', 'log_level: expected one of "TRACE", "DEBUG", "INFO", "WARN", "ERR", got "LOUD"'),
        ("ports {\n  http = 70000\n}\n", "ports.http: expected a port number (0-65535), got 70000"),
        ("ports {\n  grpc = -2\n}\n", "ports.grpc: expected a port number (0-65535, or -1 to disable), got -2"),
        ("ports {\n  sidecar_min_port = 0\n}\n", "ports.sidecar_min_port: expected a port number (1-65535), got 0"),
        ('encrypt = "not base64!"\n', "encrypt: expected a base64-encoded key, got text that is not valid base64"),
        ('encrypt = "AAAAAAAAAAAAAAAAAAAAAAAAAAA="\n', "encrypt: expected a base64-encoded 16, 24 or 32 byte key, got 20 bytes"),
        ('reconnect_timeout = "1h"\n', 'reconnect_timeout: must be at least 8h, got "1h"'),
        ('retry_interval = "soon"\n', 'retry_interval: expected a duration like "30s" or "72h", got "soon"'),
        ('retry_interval = "0s"\n', 'retry_interval: must be longer than 0s, got "0s"'),
        ('node_id = "xyz"\n', 'node_id: expected a UUID like "adf4238a-882b-9ddc-4a9d-5b6758e4159e", got "xyz"'),
        ('bind_addr = "localhost"\n', 'bind_addr: expected an IP address, got "localhost"'),
        ('bind_addr = "{{ GetPrivateIP }}"\n', 'bind_addr: expected an IP address (templates are not supported), got "{{ GetPrivateIP }}"'),
        ('datacenter = "dc 1"\n', 'datacenter: expected a name of letters, digits, "-" and "_", got "dc 1"'),
        ('node_name = " "\n', 'node_name: expected a non-empty string, got " "'),
        ("bootstrap_expect = -1\n", "bootstrap_expect: expected a number of at least 0, got -1"),
        ('connect {\n  ca_provider = "vault"\n}\n', 'connect.ca_provider: unsupported CA provider "vault"; meshnode supports only "consul"'),
        ('connect {\n  default_intention_policy = "maybe"\n}\n', 'connect.default_intention_policy: expected "allow" or "deny", got "maybe"'),
        ('connect {\n  ca_config {\n    leaf_cert_ttl = "10m"\n  }\n}\n', 'connect.ca_config.leaf_cert_ttl: must be at least 1h and less than 8760h, got "10m"'),
    ],
)  # fmt: skip
def test_error_bad_value(write: WriteFile, text: str, message: str) -> None:
    assert _error_in(write, text) == f"cluster.hcl: {message}"


def test_error_secret_key_is_never_echoed(write: WriteFile) -> None:
    assert "AAAAAAAA" not in _error_in(write, 'encrypt = "AAAAAAAAAAAAAAAAAAAAAAAAAAA="\n')


def test_error_hcl_syntax_names_file_line_and_column(write: WriteFile) -> None:
    text = 'datacenter = "dc1"\nports {\n  http = 8500\n'
    assert _error_in(write, text) == (
        'cluster.hcl: line 4, column 1: syntax error: unexpected end of file, expected "}"'
    )


def test_error_json_syntax_names_file_line_and_column(write: WriteFile) -> None:
    assert _error_in(write, '{"a": }', "agent.json") == (
        "agent.json: line 1, column 7: invalid JSON: Expecting value"
    )


def test_error_names_the_file_that_holds_the_bad_key(write: WriteFile) -> None:
    good = write("a.hcl", 'data_dir = "/d"\n')
    bad = write("b.hcl", 'ports {\n  http = "x"\n}\n')
    assert _error([good, bad]) == f'{bad}: ports.http: expected an integer, got "x"'


def test_error_data_dir_required_unless_dev(write: WriteFile) -> None:
    path = write("a.hcl", 'node_name = "n"\n')
    assert _error([path]) == (
        "data_dir: required: set data_dir in a config file, pass -data-dir, or use -dev"
    )
    assert load([path], dev=True).data_dir is None
    with pytest.raises(ConfigError):
        validate([path])


def test_error_sidecar_port_range_inverted(write: WriteFile) -> None:
    text = "ports {\n  sidecar_min_port = 21300\n  sidecar_max_port = 21200\n}\n"
    path = write("a.hcl", text)
    assert _error([path], dev=True) == (
        "ports.sidecar_min_port: must not be greater than ports.sidecar_max_port (21300 > 21200)"
    )


def test_error_service_definition_errors_carry_the_key_path(write: WriteFile) -> None:
    text = (
        'service {\n  name = "web-sidecar-proxy"\n  kind = "connect-proxy"\n  port = 8181\n'
        '  proxy {\n    destination_service_name = "web"\n    upstreams = [{\n'
        '      destination_name = "api"\n      local_bind_port = 10000\n'
        '      mesh_gateway { mode = "sideways" }\n    }]\n  }\n}\n'
    )
    assert _error_in(write, text, "web.hcl") == (
        'web.hcl: service.proxy.upstreams[0].mesh_gateway.mode: Invalid Mesh Gateway Mode: "sideways"'
    )


def test_error_second_service_in_list_is_named(write: WriteFile) -> None:
    text = 'services = [{ name = "a" }, { name = "b", port = "x" }]\n'
    message = _error_in(write, text)
    assert message.startswith("cluster.hcl: services[1].port: expected an integer")


def test_error_bootstrap_config_entry_is_named(write: WriteFile) -> None:
    text = 'config_entries {\n  bootstrap = [{ Kind = "nope" }]\n}\n'
    assert _error_in(write, text) == (
        'cluster.hcl: config_entries.bootstrap[0].Kind: invalid config entry kind: "nope" '
        "(supported: proxy-defaults, service-defaults, service-router, service-splitter, "
        "service-resolver)"
    )


def test_error_missing_file_and_bad_encoding(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.hcl")
    assert _error([missing]) == f"{missing}: no such file or directory"
    binary = tmp_path / "bin.hcl"
    binary.write_bytes(b'a = "\xff"\n')
    assert _error([str(binary)]) == f"{binary}: not valid UTF-8 (byte 5)"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"http-port": "abc"}, 'command line: -http-port: expected an integer, got "abc"'),
        ({"server": "maybe"}, 'command line: -server: expected true or false, got "maybe"'),
        ({"bind": "nowhere"}, 'command line: -bind: expected an IP address, got "nowhere"'),
        ({"frobnicate": "1"}, "command line: -frobnicate: unknown flag"),
    ],
)
def test_error_bad_flags(flags: dict[str, object], message: str) -> None:
    assert _error([], dev=True, overrides=flags) == message


def test_validate_requires_a_path() -> None:
    with pytest.raises(ConfigError, match="no config files or directories given"):
        validate([])


# --- service files and config-entry files ---------------------------------------------------


def test_load_services_document_rejects_agent_keys_and_empty_files() -> None:
    with pytest.raises(ConfigError) as exc:
        load_services_document('datacenter = "dc1"\n', "web.hcl")
    assert str(exc.value) == "web.hcl: datacenter: unknown key"
    with pytest.raises(ConfigError) as exc:
        load_services_document("", "web.hcl")
    assert str(exc.value) == (
        'web.hcl: no service definitions (expected "service { }" or "services = [ ]")'
    )


def test_load_config_entry_document_errors_name_file_and_field() -> None:
    text = 'Kind = "service-defaults"\nName = "web"\nMeshGatway { Mode = "local" }\n'
    with pytest.raises(ConfigError) as exc:
        load_config_entry_document(text, "entry.hcl")
    assert str(exc.value).startswith("entry.hcl: MeshGatway: ")
    with pytest.raises(ConfigError) as exc:
        load_config_entry_document(
            'Kind = "service-defaults"\nName = "web"\nMeshGateway {\n', "e.hcl"
        )
    assert (
        str(exc.value)
        == 'e.hcl: line 4, column 1: syntax error: unexpected end of file, expected "}"'
    )


def test_load_config_entry_document_snake_case_and_json() -> None:
    entry = load_config_entry_document(
        'kind = "service-defaults"\nname = "web"\nmesh_gateway { mode = "remote" }\n', "e.hcl"
    )
    assert entry == ServiceDefaults(name="web", mesh_gateway=MeshGatewayMode.REMOTE)
    entry = load_config_entry_document('{"Kind": "proxy-defaults", "Name": "global"}', "-")
    assert entry == ProxyDefaults(name="global")


# --- durations ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("10s", 10.0), ("72h", 259200.0), ("1m30s", 90.0), ("1.5h", 5400.0), ("0", 0.0),
        ("500ms", 0.5), ("2us", 2e-6), ("3µs", 3e-6), ("100ns", 1e-7), ("-1s", -1.0), (".5s", 0.5),
    ],
)  # fmt: skip
def test_parse_duration_go_syntax(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10", "s", "10x", "1h 30m", "1..5s", ".s", "-"])
def test_parse_duration_rejects(write: WriteFile, text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_go_duration(text)
    message = _error_in(write, f'retry_interval = "{text}"\n')
    assert (
        message
        == f'cluster.hcl: retry_interval: expected a duration like "30s" or "72h", got "{text}"'
    )


def test_AgentConfig_is_frozen() -> None:
    config = load([], dev=True)
    assert isinstance(config, AgentConfig)
    with pytest.raises(AttributeError):
        config.datacenter = "x"  # type: ignore[misc]
