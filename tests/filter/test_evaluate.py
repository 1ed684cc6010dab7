"""Evaluation: Consul's documented examples against Consul-shaped subjects, with each
endpoint's selector table, and go-bexpr's validation messages."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from node.filter import (
    CHECK,
    CHECK_SERVICE_NODE,
    NODE,
    SERVICE,
    SERVICE_NODE,
    FieldSpec,
    FilterError,
    compile_filter,
)

SERVICES: dict[str, Mapping[str, object]] = {
    "web": {
        "ID": "web",
        "Service": "web",
        "Kind": "",
        "Tags": ["primary", "v1"],
        "Meta": {"env": "qa", "build.id": "a-1"},
        "Port": 8080,
        "Address": "10.0.0.5",
        "EnableTagOverride": False,
        "Weights": {"Passing": 1, "Warning": 1},
    },
    "api": {
        "ID": "api",
        "Service": "api",
        "Kind": "",
        "Tags": [],
        "Meta": {"env": "prod"},
        "Port": 9090,
        "Address": "",
        "EnableTagOverride": True,
        "Weights": {"Passing": 3, "Warning": 1},
        "Connect": {"Native": True},
    },
    "db": {"ID": "db", "Service": "db", "Kind": "", "Tags": None, "Meta": {}, "Port": 5432},
    "web-sidecar-proxy": {
        "ID": "web-sidecar-proxy",
        "Service": "web-sidecar-proxy",
        "Kind": "connect-proxy",
        "Tags": ["primary"],
        "Meta": {},
        "Port": 8080,
        "Proxy": {
            "DestinationServiceName": "web",
            "DestinationServiceID": "web",
            "LocalServicePort": 8080,
            "MeshGateway": {"Mode": "local"},
            "Upstreams": [
                {"DestinationName": "api", "LocalBindPort": 9191, "Datacenter": ""},
                {"DestinationName": "db", "LocalBindPort": 9192, "Datacenter": "dc2"},
            ],
        },
    },
}


def selected(
    text: str, fields: FieldSpec | None, subjects: Mapping[str, Mapping[str, object]]
) -> set[str]:
    compiled = compile_filter(text, fields)
    return {name for name, subject in subjects.items() if compiled.matches(subject)}


@pytest.mark.parametrize("fields", [SERVICE, None], ids=["typed", "untyped"])
@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("Service == web", {"web"}),
        ('Service == "nomatch"', set()),
        ("Meta.env == qa", {"web"}),
        ("Meta.env != qa", {"api", "db", "web-sidecar-proxy"}),
        ('"primary" in Tags', {"web", "web-sidecar-proxy"}),
        ("Tags contains primary", {"web", "web-sidecar-proxy"}),
        ("primary not in Tags", {"api", "db"}),
        ("Tags is empty", {"api", "db"}),
        ("Tags is not empty", {"web", "web-sidecar-proxy"}),
        ('"env" in Meta', {"web", "api"}),
        ("Meta is empty", {"db", "web-sidecar-proxy"}),
        ('Meta["build.id"] == "a-1"', {"web"}),
        ("Address matches `^10\\.`", {"web"}),
        ("Address not matches `^10\\.`", {"api", "db", "web-sidecar-proxy"}),
        ('Port == 8080 and Kind == "connect-proxy"', {"web-sidecar-proxy"}),
        ("Port == 8080 or Port == 5432", {"web", "db", "web-sidecar-proxy"}),
        ("Port != 8080", {"api", "db"}),
        ("not (Port == 8080)", {"api", "db"}),
        ('Service contains "sidecar"', {"web-sidecar-proxy"}),
        ("EnableTagOverride == true", {"api"}),
        ("Weights.Passing == 3", {"api"}),
        ("Connect.Native == true", {"api"}),
        ("Connect.Native != true", {"web", "db", "web-sidecar-proxy"}),
        ("Proxy.DestinationServiceName == web", {"web-sidecar-proxy"}),
        ("Proxy.MeshGateway.Mode == local", {"web-sidecar-proxy"}),
        ("Proxy.Upstreams.DestinationName == db", {"web-sidecar-proxy"}),
        ("Proxy.Upstreams.LocalBindPort == 9191", {"web-sidecar-proxy"}),
        ("Proxy.Upstreams.Datacenter == dc3", set()),
        ("Proxy.Upstreams is not empty", {"web-sidecar-proxy"}),
    ],
)
def test_agent_services_examples(text: str, names: set[str], fields: FieldSpec | None) -> None:
    assert selected(text, fields, SERVICES) == names


ENTRIES: dict[str, Mapping[str, object]] = {
    "a": {
        "Node": {
            "ID": "n1",
            "Node": "node-1",
            "Address": "10.0.0.1",
            "Datacenter": "dc1",
            "Meta": {"os": "linux"},
        },
        "Service": {
            "ID": "api-1",
            "Service": "api",
            "Tags": ["v1"],
            "Meta": {"version": "v1"},
            "Port": 1,
        },
        "Checks": [
            {"CheckID": "serfHealth", "Status": "passing"},
            {"CheckID": "c1", "Status": "passing"},
        ],
    },
    "b": {
        "Node": {
            "ID": "n2",
            "Node": "old-2",
            "Address": "10.0.0.2",
            "Datacenter": "dc1",
            "Meta": {},
        },
        "Service": {
            "ID": "api-2",
            "Service": "api",
            "Tags": ["v2"],
            "Meta": {"version": "v2"},
            "Port": 2,
        },
        "Checks": [
            {"CheckID": "serfHealth", "Status": "passing"},
            {"CheckID": "c2", "Status": "critical"},
        ],
    },
    "c": {
        "Node": {
            "ID": "n3",
            "Node": "node-3",
            "Address": "10.0.0.3",
            "Datacenter": "dc1",
            "Meta": {"os": "linux"},
        },
        "Service": {
            "ID": "api-3",
            "Service": "api",
            "Tags": ["v2", "canary"],
            "Meta": {"version": "v2"},
            "Port": 3,
        },
        "Checks": [],
    },
}


@pytest.mark.parametrize("fields", [CHECK_SERVICE_NODE, None], ids=["typed", "untyped"])
@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("Checks.Status == critical", {"b"}),
        ("Checks.Status != passing", {"b"}),
        ("not Checks.Status != passing", {"a", "c"}),
        ("Checks is empty", {"c"}),
        ("Service.Meta.version == v2", {"b", "c"}),
        ('Service.Meta.version == v2 and not (Node.Node matches "^old-")', {"c"}),
        ('"v1" in Service.Tags', {"a"}),
        ("Service.Tags contains canary", {"c"}),
        ("Node.Meta.os == linux and Service.Meta.version != v1", {"c"}),
        (
            "Service.Meta.version == v2 and Service.Tags contains canary and Node.Meta.os == linux",
            {"c"},
        ),
        ('Node.Address == "10.0.0.1"', {"a"}),
    ],
)
def test_health_service_examples(text: str, names: set[str], fields: FieldSpec | None) -> None:
    assert selected(text, fields, ENTRIES) == names


def test_other_endpoint_tables() -> None:
    checks = {
        "1": {
            "Node": "n",
            "CheckID": "serfHealth",
            "Status": "passing",
            "ServiceName": "",
            "ServiceTags": [],
        },
        "2": {
            "Node": "n",
            "CheckID": "service:web",
            "Status": "warning",
            "ServiceName": "web",
            "ServiceTags": ["a"],
        },
        "3": {
            "Node": "n",
            "CheckID": "service:api",
            "Status": "critical",
            "ServiceName": "api",
            "ServiceTags": [],
        },
    }
    assert selected('ServiceName != ""', CHECK, checks) == {"2", "3"}
    assert selected("Status == warning or Status == critical", CHECK, checks) == {"2", "3"}
    assert selected("a in ServiceTags", CHECK, checks) == {"2"}
    nodes = {
        "1": {
            "Node": "a",
            "Address": "10.1.1.1",
            "Meta": {"rack": "r1"},
            "TaggedAddresses": {"lan": "10.1.1.1"},
        },
        "2": {"Node": "b", "Address": "192.168.0.1", "Meta": {}, "TaggedAddresses": {}},
    }
    assert selected("Address matches `^10\\.`", NODE, nodes) == {"1"}
    assert selected("Meta.rack == r1", NODE, nodes) == {"1"}
    assert selected("lan in TaggedAddresses", NODE, nodes) == {"1"}
    rows = {
        "1": {
            "Node": "a",
            "NodeMeta": {"os": "linux"},
            "ServiceMeta": {"version": "v1"},
            "ServicePort": 80,
        },
        "2": {
            "Node": "b",
            "NodeMeta": {"os": "linux"},
            "ServiceMeta": {"version": "v2"},
            "ServicePort": 81,
        },
    }
    assert selected("NodeMeta.os == linux and ServiceMeta.version != v1", SERVICE_NODE, rows) == {
        "2"
    }
    with pytest.raises(FilterError, match="Invalid number literal"):
        compile_filter("ServicePort == 0x51", SERVICE_NODE)  # base prefixes only when quoted
    assert selected('ServicePort == "0x51"', SERVICE_NODE, rows) == {"2"}


@pytest.mark.parametrize(
    ("text", "fields", "message"),
    [
        ("Foo == bar", SERVICE, 'Selector "Foo" is not valid'),
        ("Meta.env.x == bar", SERVICE, 'Selector "Meta.env.x" is not valid'),
        ("Service.Foo.Bar == x", CHECK_SERVICE_NODE, 'Selector "Service.Foo" is not valid'),
        ("Address is empty", NODE, 'Invalid match operator "Is Empty" for selector "Address"'),
        ("Port matches x", SERVICE, 'Invalid match operator "Matches" for selector "Port"'),
        (
            "Checks.Status is empty",
            CHECK_SERVICE_NODE,
            'Invalid match operator "Is Empty" for selector "Checks.Status"',
        ),
        ("Proxy == x", SERVICE, 'Invalid match operator "Equal" for selector "Proxy"'),
        (
            "Port == abc",
            SERVICE,
            'Failed to coerce value "abc" for selector "Port": strconv.ParseInt: parsing "abc": invalid syntax',
        ),
        (
            "Port == 1.5",
            SERVICE,
            'Failed to coerce value "1.5" for selector "Port": strconv.ParseInt: parsing "1.5": invalid syntax',
        ),
        (
            'Port == "99999999999999999999"',
            SERVICE,
            'Failed to coerce value "99999999999999999999" for selector "Port": '
            'strconv.ParseInt: parsing "99999999999999999999": value out of range',
        ),
        (
            "EnableTagOverride == yes",
            SERVICE,
            'Failed to coerce value "yes" for selector "EnableTagOverride": '
            'strconv.ParseBool: parsing "yes": invalid syntax',
        ),
        (
            'Service matches "("',
            SERVICE,
            'Failed to compile regular expression "(": error parsing regexp: ',
        ),
        ('Service matches "(a)\\\\1"', None, 'Failed to compile regular expression "(a)\\\\1"'),
    ],
)
def test_validation_errors(text: str, fields: FieldSpec | None, message: str) -> None:
    with pytest.raises(FilterError) as info:
        compile_filter(text, fields)
    assert str(info.value).startswith(message)


def test_first_error_in_evaluation_order() -> None:
    with pytest.raises(FilterError, match='"Bar"'):
        compile_filter("Bar == 1 or Foo == 2", SERVICE)


def test_go_integer_literals() -> None:
    subject = {"Port": 15}
    for literal in ("15", '"0xF"', '"0o17"', '"017"', '"0b1111"', '"+15"', '"1_5"'):
        assert compile_filter(f"Port == {literal}", SERVICE).matches(subject), literal
    with pytest.raises(FilterError):
        compile_filter('Port == "08"', SERVICE)
    with pytest.raises(FilterError):
        compile_filter('Port == " 15"', SERVICE)


def test_untyped_mismatch_is_a_filter_error_at_evaluation() -> None:
    compiled = compile_filter("Port matches x")
    with pytest.raises(FilterError, match='"Matches" for selector "Port"'):
        compiled.matches({"Port": 1})
    assert compiled.matches({"Other": 1}) is False
    with pytest.raises(FilterError, match="ParseInt"):
        compile_filter("Port == abc").matches({"Port": 1})


def test_bools_and_ints_do_not_mix() -> None:
    assert not compile_filter("Port == 1", SERVICE).matches({"Port": True})
    assert not compile_filter("EnableTagOverride == true", SERVICE).matches(
        {"EnableTagOverride": 1}
    )
    # Untyped, the literal takes the value's type: ParseBool("1") is true.
    assert compile_filter("Flag == 1").matches({"Flag": True})
    assert compile_filter("Flag == true").matches({"Flag": True})
    with pytest.raises(FilterError, match="ParseInt"):
        compile_filter("Flag == true").matches({"Flag": 1})


def test_select_keeps_order() -> None:
    compiled = compile_filter("Port != 5432", SERVICE)
    assert compiled.select(list(SERVICES.values())) == [
        SERVICES["web"],
        SERVICES["api"],
        SERVICES["web-sidecar-proxy"],
    ]
    assert repr(compiled) == "Filter('Port != 5432')"
