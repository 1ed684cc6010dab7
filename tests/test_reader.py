"""The one raw-input reader: key spellings, unknown/ignored/doubled keys, request durations."""

from __future__ import annotations

import pytest

from node.config.reader import Fields, Names, read_duration, read_keys
from node.errors import InvalidRequest

TABLE = {"LeafCertTTL": "leaf_cert_ttl", "Name": "name"}


def test_read_keys_accepts_both_spellings_and_skips_ignored() -> None:
    read = read_keys({"leaf_cert_ttl": "1h", "Name": "x", "ModifyIndex": 3},
                     Names.pascal_or_snake(TABLE), ignored=frozenset({"ModifyIndex"}))  # fmt: skip
    assert read.values == {"LeafCertTTL": "1h", "Name": "x"}
    assert (read.unknown, read.twice) == ((), None)


def test_read_keys_lists_unknown_keys_in_order_and_stops_at_the_first_doubled_name() -> None:
    read = read_keys(
        {"zz": 1, 7: 2, "name": "a", "Name": "b", "later": 3}, Names.pascal_or_snake(TABLE)
    )
    assert read.unknown == ("zz", 7)
    assert read.twice == ("Name", "Name")
    assert read.values == {"Name": "a"}


def test_loose_names_ignore_case_and_separators_and_suggest_the_nearest() -> None:
    names = Names.loose(("service_id", "port"), {"id": "service_id"})
    assert [names.name_of(k) for k in ("ServiceID", "service-id", "ID", "PORT", 7)] == [
        "service_id", "service_id", "service_id", "port", None,
    ]  # fmt: skip
    assert names.closest("prot") == "port"
    assert names.closest("zzzz") is None


def test_fields_skip_nulls_and_name_the_first_problem_in_input_order() -> None:
    names = Names.loose(("name", "port"))
    fields = Fields({"name": None, "Name": "web"}, "svc", names)
    assert fields.get_str("name") == "web"
    with pytest.raises(InvalidRequest, match=r'Unknown field "nmae" in svc \(did you mean "name"'):
        Fields({"nmae": 1, "name": "a", "Name": "b"}, "svc", names)
    with pytest.raises(InvalidRequest, match='Field "Name" is given twice'):
        Fields({"name": "a", "Name": "b", "nmae": 1}, "svc", names)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("10s", 10.0),
        ("1m30s", 90.0),
        ("500ms", 0.5),
        ("1.5h", 5400.0),
        ("0", 0.0),
        (10_000_000_000, 10.0),
    ],
)
def test_read_duration_go_syntax_and_nanoseconds(text: object, seconds: float) -> None:
    assert read_duration(text, field="f") == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (True, "f: expected a duration, got a boolean"),
        ([], 'f: expected a duration such as "10s", got a list'),
        (" 10x ", 'f: invalid duration "10x" (expected e.g. "10s", "1m30s", "500ms")'),
        ("-1s", "f: duration must not be negative"),
        (-5, "f: duration must not be negative"),
    ],
)
def test_read_duration_errors_name_the_field(value: object, message: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        read_duration(value, field="f")
    assert str(info.value) == message and info.value.field == "f"
