"""Consul's ACL rules language (HCL or JSON text) → a frozen ``Rules`` value.

Rule: this module only reads and checks rule text; it decides nothing. What a set of
rules allows is ``authorizer.py``'s job.

The language (Consul 1.4+ "current" syntax)::

    acl      = "write"                        # unsegmented: acl, keyring, operator
    service "web"       { policy = "write" }  # exact name
    service_prefix ""   { policy = "read"  intentions = "deny" }
    key_prefix "foo/"   { policy = "list" }   # list only for keys

or the same in JSON (``{"service": {"web": {"policy": "write"}}, "acl": "write"}``,
where a resource may also hold a list of such objects, as HCL1's JSON reader allows).

Consul's own decoder silently drops keys it does not know and then fails on the empty
policy; here an unknown resource or key, a missing or invalid policy and a value of the
wrong type are each refused with a message naming the line (HCL; JSON syntax errors)
and the key. Sentinel code policies are Consul Enterprise and are refused as such.

python-hcl2 parses HCL with the options and syntax-error wording of the config loader
(``node.config.hcl``); it is run in two stages so that the Lark tree's line numbers can
be kept for the error messages (its serializer drops them).
"""

from __future__ import annotations

import difflib
import enum
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Final

import hcl2
import lark

from node.config.hcl import HCL_OPTIONS, describe_syntax_error
from node.errors import InvalidRequest

__all__ = [
    "Access",
    "Resource",
    "Rule",
    "Rules",
    "RulesError",
    "parse_rules",
    "stronger",
    "SEGMENTED",
    "UNSEGMENTED",
]


class RulesError(InvalidRequest):
    """Rule text that is not valid; the message starts ``Failed to parse ACL rules:``."""

    def __init__(self, message: str) -> None:
        super().__init__(message, field="Rules")


class Access(enum.Enum):
    """A disposition. ``list`` exists only for keys."""

    DENY = "deny"
    READ = "read"
    LIST = "list"
    WRITE = "write"


class Resource(enum.Enum):
    """A kind of thing a rule is about; the value is the rule keyword without ``_prefix``."""

    ACL = "acl"
    AGENT = "agent"
    EVENT = "event"
    KEY = "key"
    KEYRING = "keyring"
    NODE = "node"
    OPERATOR = "operator"
    QUERY = "query"
    SERVICE = "service"
    SESSION = "session"


#: Resources whose rules name a segment (``service "web"``, ``service_prefix ""``).
SEGMENTED: Final = frozenset(
    {
        Resource.AGENT,
        Resource.EVENT,
        Resource.KEY,
        Resource.NODE,
        Resource.QUERY,
        Resource.SERVICE,
        Resource.SESSION,
    }
)
#: Resources that take one disposition for everything (``operator = "read"``).
UNSEGMENTED: Final = frozenset({Resource.ACL, Resource.KEYRING, Resource.OPERATOR})

_PREFIX_SUFFIX: Final = "_prefix"
_KEYWORDS: Final = tuple(
    sorted(
        [r.value for r in Resource] + [r.value + _PREFIX_SUFFIX for r in SEGMENTED],
    )
)
_BASIC: Final = (Access.DENY, Access.READ, Access.WRITE)
_WITH_LIST: Final = (Access.DENY, Access.READ, Access.LIST, Access.WRITE)
_BLOCK_KEYS: Final = ("policy", "intentions")


@dataclass(frozen=True, slots=True)
class Rule:
    """One segmented rule: ``service_prefix "web" { policy = "read" }``.

    ``intentions`` is set only for services, and only when written; the authorizer
    derives the default from ``policy`` as Consul does.
    """

    resource: Resource
    segment: str
    prefix: bool
    policy: Access
    intentions: Access | None = None


@dataclass(frozen=True, slots=True)
class Rules:
    """The parsed rules of one policy (or a synthetic one), in the order written.

    The same segment may appear twice; the authorizer merges duplicates as it merges
    policies (the stronger disposition wins).
    """

    segmented: tuple[Rule, ...] = ()
    acl: Access | None = None
    keyring: Access | None = None
    operator: Access | None = None
    #: What was parsed, for messages and equality; not used to decide anything.
    source: str = field(default="", compare=False, repr=False)

    def unsegmented(self, resource: Resource) -> Access | None:
        """The disposition written for ``acl``, ``keyring`` or ``operator`` (None: not set)."""
        if resource is Resource.ACL:
            return self.acl
        if resource is Resource.KEYRING:
            return self.keyring
        if resource is Resource.OPERATOR:
            return self.operator
        raise ValueError(f"{resource.value} rules take a name")


_BLOCK_MARKER: Final = "__is_block__"
_PARSED_CACHE_SIZE: Final = 1024
_PREFIX: Final = "Failed to parse ACL rules: "


def parse_rules(text: str) -> Rules:
    """Parse HCL or JSON rule text (JSON when it starts with ``{``); raise ``RulesError``.

    Empty text is an empty policy (it grants nothing), as in Consul. Results are
    memoized by text: parsing HCL costs milliseconds, and the same policies are
    compiled into many tokens' authorizers.
    """
    if not isinstance(text, str):
        raise RulesError(_PREFIX + "rules must be text")
    return _parse(text)


@lru_cache(maxsize=_PARSED_CACHE_SIZE)
def _parse(text: str) -> Rules:
    if not text.strip():
        return Rules(source=text)
    if text.lstrip().startswith("{"):
        document, lines = _load_json(text), _Lines()
    else:
        document, lines = _load_hcl(text)
    return _Builder(lines).build(document, text)


# --- reading text ---------------------------------------------------------------------


class _Lines:
    """Where each top-level item and each of its attributes was written (HCL only).

    Keyed by (keyword, n) for the n-th item with that keyword, since python-hcl2 keeps
    the order of repeated blocks but drops positions.
    """

    def __init__(self) -> None:
        self.items: dict[tuple[str, int], int] = {}
        self.attributes: dict[tuple[str, int], dict[str, int]] = {}

    def item(self, keyword: str, n: int) -> int | None:
        return self.items.get((keyword, n))

    def attribute(self, keyword: str, n: int, name: str) -> int | None:
        return self.attributes.get((keyword, n), {}).get(name, self.item(keyword, n))


def _load_json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise RulesError(f"{_PREFIX}line {e.lineno}, column {e.colno}: {e.msg}") from None
    except RecursionError:
        raise RulesError(_PREFIX + "JSON nested too deeply") from None


def _load_hcl(text: str) -> tuple[Any, _Lines]:
    try:
        tree = hcl2.parses_to_tree(text)
        document = hcl2.serialize(hcl2.transform(tree), serialization_options=HCL_OPTIONS)
    except lark.exceptions.UnexpectedInput as e:
        where = f"line {e.line}, column {e.column}"
        raise RulesError(f"{_PREFIX}{where}: syntax error: {describe_syntax_error(e)}") from None
    except (lark.exceptions.LarkError, ValueError, TypeError, KeyError, AttributeError) as e:
        # python-hcl2's transformer raises plain exceptions for a few malformed inputs.
        raise RulesError(f"{_PREFIX}syntax error: {e}") from None
    except RecursionError:
        raise RulesError(_PREFIX + "syntax error: nested too deeply") from None
    return document, _lines_of(tree)


def _lines_of(tree: lark.Tree[Any]) -> _Lines:
    lines = _Lines()
    body = next((c for c in tree.children if _is_tree(c, "body")), None)
    if body is None:
        return lines
    seen: dict[str, int] = {}
    for item in body.children:
        if not (_is_tree(item, "attribute") or _is_tree(item, "block")):
            continue
        keyword = _identifier(item)
        if keyword is None:
            continue
        n = seen.get(keyword, 0)
        seen[keyword] = n + 1
        lines.items[(keyword, n)] = item.meta.line
        lines.attributes[(keyword, n)] = dict(_attribute_lines(item))
    return lines


def _attribute_lines(block: lark.Tree[Any]) -> Iterator[tuple[str, int]]:
    for child in block.children:
        if _is_tree(child, "body"):
            for attr in child.children:
                nested = _is_tree(attr, "attribute") or _is_tree(attr, "block")
                name = _identifier(attr) if nested else None
                if name is not None:
                    yield name, attr.meta.line


def _is_tree(node: object, data: str) -> bool:
    return isinstance(node, lark.Tree) and node.data == data


def _identifier(item: lark.Tree[Any]) -> str | None:
    for child in item.children:
        if _is_tree(child, "identifier") and child.children:
            return str(child.children[0])
    return None


# --- checking the document -------------------------------------------------------------


class _Builder:
    """Walk the parsed document once, collecting rules or failing on the first bad one."""

    def __init__(self, lines: _Lines) -> None:
        self._lines = lines
        self._rules: list[Rule] = []
        self._unsegmented: dict[Resource, Access] = {}

    def build(self, document: Any, text: str) -> Rules:
        if not isinstance(document, Mapping):
            self._fail(None, "expected an object of rules at the top level")
        for keyword, value in document.items():
            self._item(str(keyword), value)
        return Rules(
            segmented=tuple(self._rules),
            acl=self._unsegmented.get(Resource.ACL),
            keyring=self._unsegmented.get(Resource.KEYRING),
            operator=self._unsegmented.get(Resource.OPERATOR),
            source=text,
        )

    def _fail(self, line: int | None, message: str) -> None:
        where = f"line {line}: " if line is not None else ""
        raise RulesError(f"{_PREFIX}{where}{message}")

    def _item(self, keyword: str, value: Any) -> None:
        resource, prefix = _keyword(keyword)
        if resource is None:
            hint = difflib.get_close_matches(keyword, _KEYWORDS, 1)
            suggestion = f' (did you mean "{hint[0]}"?)' if hint else ""
            self._fail(self._lines.item(keyword, 0), f"unknown resource {_q(keyword)}{suggestion}")
            return
        if resource in UNSEGMENTED:
            self._unsegmented_item(keyword, resource, value)
            return
        for n, (segment, body) in enumerate(self._segments(keyword, value)):
            self._segment(keyword, n, resource, prefix, segment, body)

    def _unsegmented_item(self, keyword: str, resource: Resource, value: Any) -> None:
        line = self._lines.item(keyword, 0)
        if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
            value = value[0]  # HCL1's JSON form ("operator": ["read"])
        if not isinstance(value, str):
            self._fail(
                line, f'{keyword} takes a policy string ({keyword} = "read"), got {_kind(value)}'
            )
        access = _access(value, _BASIC)
        if access is None:
            self._fail(line, f"invalid policy {_q(value)} for {keyword}")
            return
        self._unsegmented[resource] = _stronger(self._unsegmented.get(resource), access)

    def _segments(self, keyword: str, value: Any) -> Iterator[tuple[str, Any]]:
        """(segment, body) pairs from ``kw "x" { }`` blocks, ``kw = {x = {}}`` or JSON lists."""
        items = value if isinstance(value, list) else [value]
        for n, item in enumerate(items):
            if not isinstance(item, Mapping):
                self._fail(
                    self._lines.item(keyword, n),
                    f'{keyword} needs a name and a block: {keyword} "<name>" '
                    f'{{ policy = "read" }}, got {_kind(item)}',
                )
            if _BLOCK_MARKER in item:
                self._fail(
                    self._lines.item(keyword, n),
                    f'{keyword} needs a name: {keyword} "<name>" {{ policy = "read" }}',
                )
            for segment, body in item.items():
                yield str(segment), body

    def _segment(
        self, keyword: str, n: int, resource: Resource, prefix: bool, segment: str, body: Any
    ) -> None:
        what = f"{keyword} {_q(segment)}"
        line = self._lines.item(keyword, n)
        if isinstance(body, list) and len(body) == 1:
            body = body[0]  # HCL1's JSON form: "service": {"web": [{"policy": "read"}]}
        if not isinstance(body, Mapping) or (
            _BLOCK_MARKER not in body and any(isinstance(v, Mapping) for v in body.values())
        ):
            self._fail(line, f'{what} takes a block {{ policy = "..." }}, got {_kind(body)}')
        fields = {str(k): v for k, v in body.items() if k != _BLOCK_MARKER}
        allowed = _BLOCK_KEYS if resource is Resource.SERVICE else _BLOCK_KEYS[:1]
        for key in fields:
            if key not in allowed:
                self._unknown_key(keyword, n, what, key, allowed)
        if "policy" not in fields:
            self._fail(line, f"missing policy for {what}")
        choices = _WITH_LIST if resource is Resource.KEY else _BASIC
        policy = self._disposition(keyword, n, what, "policy", fields["policy"], choices)
        intentions = None
        if "intentions" in fields:
            intentions = self._disposition(
                keyword, n, what, "intentions", fields["intentions"], _BASIC
            )
        self._rules.append(Rule(resource, segment, prefix, policy, intentions))

    def _unknown_key(
        self, keyword: str, n: int, what: str, key: str, allowed: tuple[str, ...]
    ) -> None:
        line = self._lines.attribute(keyword, n, key)
        if key == "sentinel":
            self._fail(line, f"sentinel policies (Consul Enterprise) are not supported in {what}")
        hint = difflib.get_close_matches(key, allowed, 1)
        suggestion = f' (did you mean "{hint[0]}"?)' if hint else ""
        self._fail(line, f"unknown key {_q(key)} in {what}{suggestion}")

    def _disposition(
        self, keyword: str, n: int, what: str, key: str, value: Any, choices: tuple[Access, ...]
    ) -> Access:
        line = self._lines.attribute(keyword, n, key)
        if not isinstance(value, str):
            self._fail(line, f"{key} for {what} must be a string, got {_kind(value)}")
        access = _access(value, choices)
        if access is None:
            names = ", ".join(_q(c.value) for c in choices)
            label = "policy" if key == "policy" else "intentions policy"
            self._fail(line, f"invalid {label} {_q(value)} for {what} (expected one of {names})")
        assert access is not None
        return access


def _keyword(keyword: str) -> tuple[Resource | None, bool]:
    prefix = keyword.endswith(_PREFIX_SUFFIX)
    base = keyword[: -len(_PREFIX_SUFFIX)] if prefix else keyword
    try:
        resource = Resource(base)
    except ValueError:
        return None, False
    if prefix and resource not in SEGMENTED:
        return None, False
    return resource, prefix


def _access(value: str, choices: tuple[Access, ...]) -> Access | None:
    for access in choices:
        if access.value == value:
            return access
    return None


_PRECEDENCE: Final = {Access.READ: 0, Access.LIST: 1, Access.WRITE: 2, Access.DENY: 3}


def stronger(a: Access | None, b: Access | None) -> Access | None:
    """Consul's merge order: deny > write > list > read > unset."""
    if a is None:
        return b
    if b is None:
        return a
    return a if _PRECEDENCE[a] >= _PRECEDENCE[b] else b


def _stronger(a: Access | None, b: Access) -> Access:
    result = stronger(a, b)
    assert result is not None
    return result


def _q(value: str) -> str:
    return json.dumps(value)


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return f"the string {_q(value)}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    if value is None:
        return "null"
    return type(value).__name__
