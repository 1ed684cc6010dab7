"""Any JSON-like input: parsers raise only ``InvalidRequest``, wire decoders only
``RemoteProtocolError``."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from node.catalog.parse import parse_service
from node.catalog.values import CheckState, NodeRecord, ServiceInstance
from node.errors import InvalidRequest, RemoteProtocolError

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
_keys = st.sampled_from(
    ["name", "id", "kind", "port", "address", "tags", "meta", "proxy", "connect", "check", "checks",
     "weights", "tagged_addresses", "Upstreams", "destination_service_name", "sidecar_service"]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_keys | st.text(max_size=6), _json, max_size=6))
def test_parse_service_only_ever_raises_InvalidRequest(raw: dict[str, Any]) -> None:
    try:
        svc = parse_service(raw)
    except InvalidRequest as exc:
        assert str(exc)
    else:
        assert svc.name


@settings(max_examples=300, deadline=None)
@given(_json)
def test_from_wire_only_ever_raises_RemoteProtocolError(raw: Any) -> None:
    for decode in (NodeRecord.from_wire, ServiceInstance.from_wire, CheckState.from_wire):
        try:
            decode(raw)
        except RemoteProtocolError:
            pass
