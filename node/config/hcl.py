"""HCL and JSON documents → plain Python values, the way Consul reads its files.

Rule: this module only turns text into dicts, lists and scalars; it knows no schema beyond
the names of keys that are always lists. ``node/config.py`` (agent config), the service
file loader and the config-entry loader all start here, so every file meshnode reads
parses the same way and fails with the same kind of message (file, line, column).

Three Consul habits that python-hcl2 alone does not cover:

- **HCL1 nested blocks in object constructors.** Consul's examples write
  ``upstreams = [{ mesh_gateway { mode = "remote" } }]``; HCL2 allows only
  ``key = value`` inside ``{ ... }`` values. ``rewrite_hcl1`` turns ``ident {`` into
  ``ident={`` there (same length, so line and column numbers stay right), and never
  inside strings, template interpolations, comments or heredocs.
- **Blocks become lists.** python-hcl2 returns every block as a list of dicts. We parse
  with block markers on, and hand back repeated/single blocks as ``BlockList`` so that
  ``normalize_blocks`` can do what Consul's decoder does: a single block becomes an
  object, repeated blocks a list, and keys that are always lists stay lists. Lists
  written as ``key = [ ... ]`` are never flattened.
- **Heredoc markers** are stripped (``<<EOF ... EOF`` → the text in between).

Pure: no I/O; callers read the files.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterable
from typing import Any, Final

import hcl2
import lark
from hcl2.utils import SerializationOptions

from node.config.reader import canonical_key
from node.errors import ConfigError

__all__ = [
    "BlockList",
    "DEFAULT_LIST_KEYS",
    "DEFAULT_OPAQUE_KEYS",
    "HCL_OPTIONS",
    "describe_syntax_error",
    "is_json_document",
    "load_document",
    "normalize_blocks",
    "rewrite_hcl1",
]

#: Keys whose value is always a list, even when written as a single block
#: (compared with ``canonical_key``: case and underscores do not matter).
DEFAULT_LIST_KEYS: Final = frozenset(
    {
        "services",
        "checks",
        "upstreams",
        "tags",
        "retryjoin",
        "retryjoinwan",
        "startjoin",
        "startjoinwan",
        "bootstrap",
        "paths",
        "args",
        "scriptargs",
        "recursors",
        "watches",
        "segments",
        "primarygateways",
        "serflanallowedcidrs",
        "serfwanallowedcidrs",
    }
)

#: Keys whose value is user data (metadata, opaque proxy config, HTTP headers): inside
#: them the list-key names above mean nothing, so only real HCL blocks are flattened.
DEFAULT_OPAQUE_KEYS: Final = frozenset({"meta", "nodemeta", "config", "header"})

HCL_OPTIONS: Final = SerializationOptions(
    strip_string_quotes=True,
    # Markers are kept so that a block list can be told from a ``key = [...]`` list;
    # they are removed again in ``_mark_blocks``.
    explicit_blocks=True,
    with_comments=False,
    preserve_heredocs=False,
    preserve_scientific_notation=False,
)
_BLOCK_MARKER: Final = "__is_block__"

# Lark terminal names → what a user would call them, for "expected ..." in syntax errors.
_TOKEN_NAMES: Final = {
    "LBRACE": '"{"',
    "RBRACE": '"}"',
    "LSQB": '"["',
    "RSQB": '"]"',
    "LPAR": '"("',
    "RPAR": '")"',
    "EQ": '"="',
    "COLON": '":"',
    "COMMA": '","',
    "NAME": "a name",
    "DBLQUOTE": '"\\""',
    "NL_OR_COMMENT": "a new line",
    "$END": "end of file",
}
_MAX_EXPECTED_SHOWN: Final = 4


class BlockList(list[Any]):
    """A list that came from one or more HCL blocks (``key { ... }``), not from ``key = [...]``."""


def is_json_document(text: str, filename: str) -> bool:
    """JSON by extension; for other names (stdin, ``-``) by content: HCL never starts with ``{``."""
    lowered = filename.lower()
    if lowered.endswith(".json"):
        return True
    if lowered.endswith(".hcl"):
        return False
    return text.lstrip().startswith("{")


def load_document(text: str, filename: str) -> dict[str, Any]:
    """Parse one HCL or JSON document into a dict; raise ``ConfigError`` naming file, line, column.

    Blocks come back as ``BlockList`` (a ``list`` subclass) so ``normalize_blocks`` can
    flatten them as Consul does.
    """
    if is_json_document(text, filename):
        return _load_json(text, filename)
    return _load_hcl(text, filename)


def _load_json(text: str, filename: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        where = f"line {e.lineno}, column {e.colno}"
        raise ConfigError(f"{where}: invalid JSON: {e.msg}", file=filename) from None
    if not isinstance(value, dict):
        raise ConfigError("expected a JSON object at the top level", file=filename)
    return value


def _load_hcl(text: str, filename: str) -> dict[str, Any]:
    try:
        raw = hcl2.loads(rewrite_hcl1(text, filename), serialization_options=HCL_OPTIONS)
    except lark.exceptions.UnexpectedInput as e:
        reason = f"line {e.line}, column {e.column}: syntax error: {describe_syntax_error(e)}"
        raise ConfigError(reason, file=filename) from None
    except (lark.exceptions.LarkError, ValueError, TypeError, KeyError) as e:
        # python-hcl2's transformer raises plain exceptions for a few malformed inputs.
        raise ConfigError(f"syntax error: {e}", file=filename) from None
    marked = _mark_blocks(raw)
    assert isinstance(marked, dict)
    return marked


def describe_syntax_error(e: lark.exceptions.UnexpectedInput) -> str:
    """One line: what was found and, when the list is short, what was expected."""
    if isinstance(e, lark.exceptions.UnexpectedCharacters):
        return f"unexpected character {json.dumps(e.char)}"
    if isinstance(e, lark.exceptions.UnexpectedToken):
        token = e.token
        # Some terminals swallow the whitespace that follows them ("@\n\n"): show the word.
        words = str(token.value).split()
        if token.type == "$END":
            found = "end of file"
        elif token.type == "NL_OR_COMMENT" or not words:
            found = "end of line"
        else:
            found = json.dumps(words[0][:40])
        expected = sorted({_TOKEN_NAMES[t] for t in e.expected if t in _TOKEN_NAMES})
        if expected and len(e.expected) <= _MAX_EXPECTED_SHOWN:
            return f"unexpected {found}, expected {' or '.join(expected)}"
        return f"unexpected {found}"
    return "unexpected end of file"


def _mark_blocks(value: Any) -> Any:
    """Drop python-hcl2's block markers, turning lists of blocks into ``BlockList``."""
    if isinstance(value, dict):
        return {k: _mark_blocks(v) for k, v in value.items() if k != _BLOCK_MARKER}
    if isinstance(value, list):
        items = [_mark_blocks(v) for v in value]
        if value and all(_is_block(v) for v in value):
            return BlockList(items)
        return items
    return value


def _is_block(value: Any) -> bool:
    """True for a block dict; labelled blocks (``svc "x" { }``) nest the marker one level down."""
    if not isinstance(value, dict):
        return False
    if value.get(_BLOCK_MARKER) is True:
        return True
    return len(value) == 1 and _is_block(next(iter(value.values())))


def normalize_blocks(
    value: Any,
    list_keys: Collection[str] = DEFAULT_LIST_KEYS,
    *,
    opaque_keys: Collection[str] = DEFAULT_OPAQUE_KEYS,
) -> Any:
    """Flatten HCL blocks as Consul does; return plain dicts and lists.

    Under a key whose ``canonical_key`` is in ``list_keys`` a block list stays a list;
    elsewhere a single block becomes an object and repeated blocks a list. Inside a key in
    ``opaque_keys`` (user data) ``list_keys`` no longer apply. ``list_keys`` and
    ``opaque_keys`` hold canonical names (``canonical_key``).
    """
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            canon = canonical_key(str(key))
            if isinstance(item, BlockList) and len(item) == 1 and canon not in list_keys:
                item = item[0]
            inner_keys: Collection[str] = () if canon in opaque_keys else list_keys
            out[key] = normalize_blocks(item, inner_keys, opaque_keys=opaque_keys)
        return out
    if isinstance(value, list):
        return [normalize_blocks(v, list_keys, opaque_keys=opaque_keys) for v in value]
    return value


# --- HCL1 → HCL2 rewrite ------------------------------------------------------------------

_IDENT: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_NUMBER: Final = re.compile(r"[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_HEREDOC_START: Final = re.compile(r"<<(-?)([A-Za-z_][A-Za-z0-9_-]*)[ \t]*\r?\n")
_BODY, _BLOCK, _OBJECT, _TUPLE, _PAREN = "body", "block", "object", "tuple", "paren"
_CLOSERS: Final = {"}": (_BLOCK, _OBJECT), "]": (_TUPLE,), ")": (_PAREN,)}


def rewrite_hcl1(text: str, filename: str | None = None) -> str:
    """Turn HCL1's ``ident {`` inside an object constructor into HCL2's ``ident={``.

    Strings (with their ``${ }`` interpolations), comments and heredocs are copied
    unchanged. When a space separates the name from ``{`` it is replaced by ``=``, so
    line and column numbers of later syntax errors still point at the user's text.
    The same block name twice in one object would silently keep only the last one after
    the rewrite, so that is a ``ConfigError`` instead.
    """
    return _Rewriter(text, filename).run()


class _Rewriter:
    """A small HCL scanner: it tracks only what kind of ``{ }`` it is in, nothing else."""

    __slots__ = ("_text", "_file", "_out", "_i", "_stack", "_names", "_prev", "_item_start")

    def __init__(self, text: str, filename: str | None) -> None:
        self._text = text
        self._file = filename
        self._out: list[str] = []
        self._i = 0
        self._stack: list[str] = [_BODY]
        self._names: list[set[str]] = [set()]  # block names rewritten in each open frame
        self._prev = ""  # class of the last significant token: ident, string, value or a char
        self._item_start = False  # at the start of an item of an object constructor

    def run(self) -> str:
        """Scan the whole text once and return the rewritten copy."""
        while self._i < len(self._text):
            self._step()
        return "".join(self._out)

    def _copy(self, end: int) -> None:
        self._out.append(self._text[self._i : end])
        self._i = end

    def _step(self) -> None:
        text, i = self._text, self._i
        ch = text[i]
        if ch == "\n":
            self._item_start = self._item_start or self._stack[-1] == _OBJECT
            self._copy(i + 1)
        elif ch in " \t\r":
            self._copy(i + 1)
        elif ch == "#" or text.startswith("//", i):
            self._copy(_line_end(text, i))
        elif text.startswith("/*", i):
            close = text.find("*/", i + 2)
            self._copy(len(text) if close < 0 else close + 2)
        elif ch == '"':
            self._token(_skip_string(text, i + 1), "string")
        elif text.startswith("<<", i) and (heredoc := _HEREDOC_START.match(text, i)):
            self._token(_skip_heredoc(text, heredoc), "string")
        elif match := _IDENT.match(text, i):
            self._ident(match.end())
        elif match := _NUMBER.match(text, i):
            self._token(match.end(), "value")
        else:
            self._punct(ch)

    def _token(self, end: int, kind: str) -> None:
        self._copy(end)
        self._prev = kind
        self._item_start = False

    def _ident(self, end: int) -> None:
        nested_block = self._stack[-1] == _OBJECT and self._item_start
        start = self._i
        self._token(end, "ident")
        if not nested_block:
            return
        text, j = self._text, end
        while j < len(text) and text[j] in " \t":
            j += 1
        if j < len(text) and text[j] == "{":
            # HCL1 block inside an object constructor: make it an attribute.
            self._claim(text[start:end], start)
            if j > end:
                self._out.append("=" + text[end + 1 : j])
                self._i = j
            else:
                self._out.append("=")
            self._prev = "="

    def _claim(self, name: str, at: int) -> None:
        if name in self._names[-1]:
            line = self._text.count("\n", 0, at) + 1
            column = at - (self._text.rfind("\n", 0, at) + 1) + 1
            reason = (
                f"line {line}, column {column}: block {json.dumps(name)} is repeated inside "
                f"one list element; write {name} = [{{ ... }}, {{ ... }}] instead"
            )
            raise ConfigError(reason, file=self._file)
        self._names[-1].add(name)

    def _punct(self, ch: str) -> None:
        top = self._stack[-1]
        if ch == "{":
            is_block = top in (_BODY, _BLOCK) and self._prev in ("ident", "string")
            self._push(_BLOCK if is_block else _OBJECT)
        elif ch == "[":
            self._push(_TUPLE)
        elif ch == "(":
            self._push(_PAREN)
        elif ch in _CLOSERS and len(self._stack) > 1 and top in _CLOSERS[ch]:
            self._stack.pop()
            self._names.pop()
        self._copy(self._i + 1)
        self._prev = ch
        self._item_start = self._stack[-1] == _OBJECT and ch in "{,"

    def _push(self, frame: str) -> None:
        self._stack.append(frame)
        self._names.append(set())


def _line_end(text: str, i: int) -> int:
    end = text.find("\n", i)
    return len(text) if end < 0 else end


def _skip_string(text: str, i: int) -> int:
    """Index just past the closing quote of a string whose body starts at ``i``.

    A string ends at its closing quote, or (unterminated) at the end of the line, which
    the parser then reports; ``${ }`` and ``%{ }`` may hold nested strings and braces.
    """
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
        elif ch == '"':
            return i + 1
        elif ch == "\n":
            return i
        elif text.startswith(("$${", "%%{"), i):
            i += 3
        elif text.startswith(("${", "%{"), i):
            i = _skip_template(text, i + 2)
        else:
            i += 1
    return len(text)


def _skip_template(text: str, i: int) -> int:
    """Index just past the ``}`` closing a template interpolation whose body starts at ``i``."""
    depth = 1
    while i < len(text):
        ch = text[i]
        if ch == '"':
            i = _skip_string(text, i + 1)
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return len(text)


def _skip_heredoc(text: str, start: re.Match[str]) -> int:
    """Index just past the line that closes a heredoc (or the end of the text)."""
    marker = start.group(2)
    pos = start.end()
    for line in _lines_from(text, pos):
        if line.strip() == marker:
            return _line_end(text, pos)
        pos += len(line) + 1
    return len(text)


def _lines_from(text: str, pos: int) -> Iterable[str]:
    while pos <= len(text):
        end = _line_end(text, pos)
        yield text[pos:end]
        if end >= len(text):
            return
        pos = end + 1
