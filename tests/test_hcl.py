"""node.hcl: HCL/JSON parsing, the HCL1 nested-block rewrite, block flattening, syntax errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.config.hcl import (
    BlockList,
    canonical_key,
    is_json_document,
    load_document,
    normalize_blocks,
    rewrite_hcl1,
)
from node.errors import ConfigError

FIXTURES = Path(__file__).parent / "fixtures" / "config"


def _load(text: str, name: str = "t.hcl") -> object:
    return normalize_blocks(load_document(text, name))


# --- the seed document's examples -----------------------------------------------------------


def test_load_document_seed_upstream_modes_hcl1_block_in_list_element() -> None:
    # python-hcl2 alone rejects this file (reference/hcl.md): LBRACE at line 11, column 14.
    doc = _load((FIXTURES / "upstream-modes.hcl").read_text(), "upstream-modes.hcl")
    upstreams = doc["service"]["proxy"]["upstreams"]
    assert [
        (u["destination_name"], u["local_bind_port"], u["mesh_gateway"]) for u in upstreams
    ] == [
        ("api", 10000, {"mode": "remote"}),
        ("db", 10001, {"mode": "local"}),
        ("logging", 10002, {"mode": "none"}),
    ]


def test_load_document_seed_config_entry_blocks_flatten() -> None:
    doc = _load((FIXTURES / "proxy-defaults.hcl").read_text(), "proxy-defaults.hcl")
    assert doc == {"Kind": "proxy-defaults", "Name": "global", "MeshGateway": {"Mode": "local"}}


# --- the HCL1 rewrite ------------------------------------------------------------------------


def test_rewrite_hcl1_rewrites_only_inside_object_constructors() -> None:
    text = 'a { b { c = 1 } }\nl = [{ m { x = "y" } }]\n'
    assert rewrite_hcl1(text) == 'a { b { c = 1 } }\nl = [{ m={ x = "y" } }]\n'


def test_rewrite_hcl1_keeps_length_when_a_space_separates_name_and_brace() -> None:
    text = "l = [{\n  m    {\n  }\n}]\n"
    out = rewrite_hcl1(text)
    assert out == "l = [{\n  m=   {\n  }\n}]\n"
    assert len(out) == len(text)


def test_rewrite_hcl1_inserts_equals_when_brace_touches_name() -> None:
    assert rewrite_hcl1("l = [{ m{ x = 1 } }]") == "l = [{ m={ x = 1 } }]"


def test_rewrite_hcl1_never_touches_strings_comments_or_heredocs() -> None:
    text = (
        "l = [{\n"
        '  s = "mesh_gateway { mode = 1 }"\n'
        '  t = "${foo("}")} k { }"\n'
        "  # mesh_gateway { mode = 2 }\n"
        "  // mesh_gateway { mode = 3 }\n"
        "  /* mesh_gateway {\n mode = 4 } */\n"
        "  h = <<EOF\n"
        "mesh_gateway { mode = 5 }\n"
        "EOF\n"
        "  i = <<-EOT\n"
        "    mesh_gateway { mode = 6 }\n"
        "    EOT\n"
        "}]\n"
    )
    assert rewrite_hcl1(text) == text
    doc = _load(text)
    assert doc["l"][0]["s"] == "mesh_gateway { mode = 1 }"
    assert doc["l"][0]["h"] == "mesh_gateway { mode = 5 }"  # heredoc markers stripped
    assert doc["l"][0]["i"] == "mesh_gateway { mode = 6 }"


def test_rewrite_hcl1_after_a_string_in_an_object_still_rewrites_the_next_item() -> None:
    text = 'l = [{ s = "a{b" , m { x = 1 } }]'
    assert rewrite_hcl1(text) == 'l = [{ s = "a{b" , m={ x = 1 } }]'
    assert _load(text) == {"l": [{"s": "a{b", "m": {"x": 1}}]}


def test_rewrite_hcl1_nested_blocks_inside_rewritten_blocks() -> None:
    text = "l = [{\n  a {\n    b {\n      c = 1\n    }\n  }\n}]\n"
    assert _load(text) == {"l": [{"a": {"b": {"c": 1}}}]}


def test_rewrite_hcl1_repeated_block_in_one_object_is_an_error_not_data_loss() -> None:
    text = "l = [{\n  c { a = 1 }\n  c { a = 2 }\n}, { c { a = 3 } }]\n"
    with pytest.raises(ConfigError) as exc:
        load_document(text, "x.hcl")
    assert str(exc.value) == (
        'x.hcl: line 3, column 3: block "c" is repeated inside one list element; '
        "write c = [{ ... }, { ... }] instead"
    )
    # The same name in sibling or nested objects is fine.
    assert _load("l = [{ c { c { a = 1 } } }, { c { a = 2 } }]\n") == {
        "l": [{"c": {"c": {"a": 1}}}, {"c": {"a": 2}}]
    }


def test_rewrite_hcl1_leaves_top_level_and_block_bodies_alone() -> None:
    text = 'service {\n  proxy {\n    mesh_gateway { mode = "local" }\n  }\n}\n'
    assert rewrite_hcl1(text) == text


@given(st.text(alphabet=st.sampled_from(list('ab {}[]="#/*\n<-EOF$,')), max_size=60))
def test_rewrite_hcl1_only_ever_replaces_or_inserts_equals(text: str) -> None:
    try:
        out = rewrite_hcl1(text)
    except ConfigError as e:
        assert "is repeated inside one list element" in str(e)
        return

    def strip(s: str) -> str:
        return s.replace("=", "").replace(" ", "")

    assert strip(out) == strip(text)
    assert len(out) >= len(text)


# --- blocks ------------------------------------------------------------------------------


def test_load_document_marks_block_lists() -> None:
    doc = load_document("svc { a = 1 }\nl = [{ a = 1 }]\n", "t.hcl")
    assert isinstance(doc["svc"], BlockList)
    assert not isinstance(doc["l"], BlockList)


def test_normalize_blocks_single_repeated_and_list_keys() -> None:
    text = (
        'one { x = 1 }\nrep { x = 1 }\nrep { x = 2 }\nchecks { name = "c" }\nattr = [{ y = 1 }]\n'
    )
    assert _load(text) == {
        "one": {"x": 1},
        "rep": [{"x": 1}, {"x": 2}],
        "checks": [{"name": "c"}],  # always a list
        "attr": [{"y": 1}],  # written as a list: never flattened
    }


def test_normalize_blocks_list_keys_match_case_and_underscore_insensitively() -> None:
    doc = load_document("Upstreams { a = 1 }\nRetry_Join { a = 1 }\n", "t.hcl")
    assert normalize_blocks(doc) == {"Upstreams": [{"a": 1}], "Retry_Join": [{"a": 1}]}
    assert canonical_key("mesh_gateway") == canonical_key("MeshGateway") == "meshgateway"


def test_normalize_blocks_opaque_keys_ignore_list_key_names() -> None:
    doc = load_document("config { checks { a = 1 } }\n", "t.hcl")
    assert normalize_blocks(doc) == {"config": {"checks": {"a": 1}}}


def test_normalize_blocks_custom_list_keys() -> None:
    doc = load_document("a { x = 1 }\nb { x = 1 }\n", "t.hcl")
    assert normalize_blocks(doc, frozenset({"a"})) == {"a": [{"x": 1}], "b": {"x": 1}}


# --- values and JSON ----------------------------------------------------------------------


def test_load_document_scalars() -> None:
    doc = _load('i = 8500\nf = 1.5\nb = true\ns = "a\\"b"\nn = null\ne = 1e3\nneg = -3\n')
    assert doc == {"i": 8500, "f": 1.5, "b": True, "s": 'a"b', "n": None, "e": 1000.0, "neg": -3}


def test_load_document_json_by_extension_and_by_content() -> None:
    assert load_document('{"ports": {"http": 1}}', "a.json") == {"ports": {"http": 1}}
    assert load_document(' {"a": 1}', "-") == {"a": 1}
    assert load_document("a = 1", "-") == {"a": 1}
    assert is_json_document("{}", "x.JSON")
    assert not is_json_document("{}", "x.hcl")


def test_load_document_json_errors_name_line_and_column() -> None:
    with pytest.raises(ConfigError) as exc:
        load_document('{\n  "a": 1\n  "b": 2\n}', "web.json")
    assert str(exc.value) == "web.json: line 3, column 3: invalid JSON: Expecting ',' delimiter"
    with pytest.raises(ConfigError) as exc:
        load_document("[1]", "web.json")
    assert str(exc.value) == "web.json: expected a JSON object at the top level"


# --- syntax errors ------------------------------------------------------------------------


def test_load_document_syntax_error_unclosed_block() -> None:
    with pytest.raises(ConfigError) as exc:
        load_document('a = "x"\nb { c = 1\n', "cluster.hcl")
    assert str(exc.value) == (
        'cluster.hcl: line 3, column 1: syntax error: unexpected end of file, expected "}"'
    )
    assert exc.value.file == "cluster.hcl"


def test_load_document_syntax_error_block_attribute_with_comma() -> None:
    with pytest.raises(ConfigError) as exc:
        load_document("ports {\n  http = 1, dns = 2\n}\n", "cluster.hcl")
    assert str(exc.value).startswith('cluster.hcl: line 2, column 11: syntax error: unexpected ","')


def test_load_document_syntax_error_unexpected_character() -> None:
    with pytest.raises(ConfigError) as exc:
        load_document("a = 1\nb = @\n", "x.hcl")
    assert str(exc.value) == 'x.hcl: line 2, column 5: syntax error: unexpected "@"'


def test_load_document_syntax_error_position_survives_rewrite() -> None:
    # The rewrite replaced the space in "m {" by "=", so columns on that line are unchanged.
    text = "l = [{\n  m { x = 1 } y\n}]\n"
    with pytest.raises(ConfigError) as exc:
        load_document(text, "x.hcl")
    # "y" is at column 15; the parser stops at the end of that line.
    assert str(exc.value) == (
        'x.hcl: line 2, column 16: syntax error: unexpected end of line, expected ":" or "="'
    )
