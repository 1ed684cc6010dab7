"""read_keys: both spellings map to the PascalCase name; unknown, ignored and doubled keys."""

from __future__ import annotations

from node.connect.keys import read_keys

TABLE = {"LeafCertTTL": "leaf_cert_ttl", "Name": "name"}


def test_read_keys_accepts_both_spellings_and_skips_ignored() -> None:
    read = read_keys({"leaf_cert_ttl": "1h", "Name": "x", "ModifyIndex": 3}, TABLE,
                     ignored=frozenset({"ModifyIndex"}))  # fmt: skip
    assert read.values == {"LeafCertTTL": "1h", "Name": "x"}
    assert (read.unknown, read.twice) == ((), None)


def test_read_keys_lists_unknown_keys_in_order_and_stops_at_the_first_doubled_name() -> None:
    read = read_keys({"zz": 1, 7: 2, "name": "a", "Name": "b", "later": 3}, TABLE)
    assert read.unknown == ("zz", 7)
    assert read.twice == ("Name", "Name")
    assert read.values == {"Name": "a"}
