"""What a token may do: rules compiled once into a frozen ``Authorizer``.

Rule: this module decides, it never fetches. Whoever resolves a token (policies, roles,
service identities) hands the ``Rules`` here with the default authorizer, and keeps the
result for as long as the token's policies do not change.

Consul's semantics (``acl/acl.go`` and ``acl/policy.go`` of Consul 1.6):

1. **Merge.** All rules of all policies are merged per (resource, exact|prefix,
   segment): the stronger disposition wins, ``deny`` > ``write`` > ``list`` > ``read``.
   A service's ``policy`` and ``intentions`` merge separately.
2. **Look up** a name: an exact rule for it wins outright, even when weaker than a
   prefix rule; else the longest prefix rule that matches applies.
3. **Enforce**: ``write`` grants read, list and write; ``list`` grants list and read;
   ``read`` grants read; ``deny`` refuses. A rule that matched decides: it never falls
   through. No rule → the parent (``default``) decides.
4. **Intentions** are looked up by destination service; when a service rule does not
   say ``intentions``, ``read``/``write`` give intentions ``read`` and ``deny`` gives
   ``deny``.
5. The static parents (``ALLOW_ALL``, ``DENY_ALL``) never grant ``acl`` read/write or
   snapshots; only ``MANAGE_ALL`` or an explicit ``acl`` rule does.

Lookups walk a character trie of the prefixes (O(len(name)) whatever the number of
rules) after one exact-match dict probe, and each table memoizes recent names.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from node.acl.rules import Access, Resource, Rule, Rules, stronger

__all__ = [
    "ALLOW_ALL",
    "ANONYMOUS_TOKEN_ID",
    "ANONYMOUS_TOKEN_SECRET",
    "Authorizer",
    "DENY_ALL",
    "GLOBAL_MANAGEMENT_POLICY_ID",
    "GLOBAL_MANAGEMENT_POLICY_NAME",
    "GLOBAL_MANAGEMENT_RULES",
    "MANAGE_ALL",
    "agent_recovery_rules",
    "compile_authorizer",
    "default_authorizer",
    "service_identity_rules",
]

GLOBAL_MANAGEMENT_POLICY_ID: Final = "00000000-0000-0000-0000-000000000001"
GLOBAL_MANAGEMENT_POLICY_NAME: Final = "global-management"
ANONYMOUS_TOKEN_ID: Final = "00000000-0000-0000-0000-000000000002"
ANONYMOUS_TOKEN_SECRET: Final = "anonymous"

#: The rules of the built-in ``global-management`` policy, as Consul writes them.
GLOBAL_MANAGEMENT_RULES: Final = """
acl = "write"
agent_prefix "" {
  policy = "write"
}
event_prefix "" {
  policy = "write"
}
key_prefix "" {
  policy = "write"
}
keyring = "write"
node_prefix "" {
  policy = "write"
}
operator = "write"
query_prefix "" {
  policy = "write"
}
service_prefix "" {
  policy = "write"
  intentions = "write"
}
session_prefix "" {
  policy = "write"
}
"""

_SERVICE_IDENTITY_TEMPLATE: Final = """
service "{name}" {{
  policy = "write"
}}
service "{name}-sidecar-proxy" {{
  policy = "write"
}}
service_prefix "" {{
  policy = "read"
}}
node_prefix "" {{
  policy = "read"
}}"""

#: Names memoized per rule table; the working set of one token is small.
_LOOKUP_CACHE_SIZE: Final = 1024


_AGENT: Final = Resource.AGENT.value
_EVENT: Final = Resource.EVENT.value
_KEY: Final = Resource.KEY.value
_NODE: Final = Resource.NODE.value
_QUERY: Final = Resource.QUERY.value
_SERVICE: Final = Resource.SERVICE.value
_SESSION: Final = Resource.SESSION.value
_INTENTIONS: Final = "intentions"


class _Need(enum.Enum):
    READ = "read"
    LIST = "list"
    WRITE = "write"


_GRANTS: Final[Mapping[Access, frozenset[_Need]]] = {
    Access.WRITE: frozenset(_Need),
    Access.LIST: frozenset({_Need.LIST, _Need.READ}),
    Access.READ: frozenset({_Need.READ}),
    Access.DENY: frozenset(),
}


class _Node:
    """One character step of the trie; ``exact``/``prefix`` are rules ending here."""

    __slots__ = ("children", "exact", "prefix")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.exact: Access | None = None
        self.prefix: Access | None = None

    def walk(self) -> Iterator[_Node]:
        """This node and every node below it."""
        stack = [self]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(node.children.values())


class _Table:
    """The merged rules of one resource: exact names in a dict, prefixes in a trie."""

    __slots__ = ("_exact", "_root", "lookup")

    def __init__(self, exact: Mapping[str, Access], prefixes: Mapping[str, Access]) -> None:
        self._exact = dict(exact)
        self._root = _Node()
        for segment, access in exact.items():
            self._node(segment).exact = access
        for segment, access in prefixes.items():
            self._node(segment).prefix = access
        self.lookup = lru_cache(maxsize=_LOOKUP_CACHE_SIZE)(self._find)

    def _node(self, segment: str) -> _Node:
        node = self._root
        for ch in segment:
            node = node.children.setdefault(ch, _Node())
        return node

    def _find(self, name: str) -> Access | None:
        """The rule that decides for ``name``, or None when no rule matches."""
        exact = self._exact.get(name)
        if exact is not None:
            return exact
        return self.longest_prefix(name)

    def longest_prefix(self, name: str) -> Access | None:
        node: _Node | None = self._root
        best = self._root.prefix
        for ch in name:
            assert node is not None
            node = node.children.get(ch)
            if node is None:
                break
            if node.prefix is not None:
                best = node.prefix
        return best

    def all_write_below(self, prefix: str) -> bool:
        """True when every rule on ``prefix`` or under it (exact or prefix) is ``write``."""
        node: _Node | None = self._root
        for ch in prefix:
            assert node is not None
            node = node.children.get(ch)
            if node is None:
                return True
        assert node is not None
        return all(
            rule in (None, Access.WRITE) for n in node.walk() for rule in (n.exact, n.prefix)
        )


@dataclass(frozen=True, eq=False, slots=True)
class Authorizer:
    """Answers "may this token do X?"; build with ``compile_authorizer``.

    Static authorizers (no tables, no parent) answer ``allow`` for every resource and
    ``manage`` for ``acl`` and snapshots.
    """

    #: Rule tables by ``Resource`` value, and intentions under ``_INTENTIONS``.
    _tables: Mapping[str, _Table]
    _single: Mapping[Resource, Access]
    _parent: Authorizer | None
    _allow: bool
    _manage: bool
    name: str = "policy"

    def __repr__(self) -> str:
        return f"<Authorizer {self.name}>"

    # -- the questions, as Consul's Authorizer interface asks them -----------------------

    def acl_read(self) -> bool:
        return self._unsegmented(Resource.ACL, _Need.READ)

    def acl_write(self) -> bool:
        return self._unsegmented(Resource.ACL, _Need.WRITE)

    def snapshot(self) -> bool:
        """Taking and restoring snapshots: ``acl = "write"``."""
        return self._unsegmented(Resource.ACL, _Need.WRITE)

    def agent_read(self, node: str) -> bool:
        return self._segmented(_AGENT, node, _Need.READ)

    def agent_write(self, node: str) -> bool:
        return self._segmented(_AGENT, node, _Need.WRITE)

    def event_read(self, name: str) -> bool:
        return self._segmented(_EVENT, name, _Need.READ)

    def event_write(self, name: str) -> bool:
        return self._segmented(_EVENT, name, _Need.WRITE)

    def key_read(self, key: str) -> bool:
        return self._segmented(_KEY, key, _Need.READ)

    def key_list(self, prefix: str) -> bool:
        return self._segmented(_KEY, prefix, _Need.LIST)

    def key_write(self, key: str) -> bool:
        return self._segmented(_KEY, key, _Need.WRITE)

    def key_write_prefix(self, prefix: str) -> bool:
        """Deleting a whole tree: ``write`` on the prefix and no narrower rule refusing it."""
        parent_allows = self._parent.key_write_prefix(prefix) if self._parent else self._allow
        table = self._tables.get(_KEY)
        if table is None:
            return parent_allows
        on_path = table.longest_prefix(prefix)
        if on_path is None and not parent_allows:
            return False
        if on_path is not None and on_path is not Access.WRITE:
            return False
        if not table.all_write_below(prefix):
            return False
        return True if on_path is not None else parent_allows

    def keyring_read(self) -> bool:
        return self._unsegmented(Resource.KEYRING, _Need.READ)

    def keyring_write(self) -> bool:
        return self._unsegmented(Resource.KEYRING, _Need.WRITE)

    def node_read(self, name: str) -> bool:
        return self._segmented(_NODE, name, _Need.READ)

    def node_write(self, name: str) -> bool:
        return self._segmented(_NODE, name, _Need.WRITE)

    def operator_read(self) -> bool:
        return self._unsegmented(Resource.OPERATOR, _Need.READ)

    def operator_write(self) -> bool:
        return self._unsegmented(Resource.OPERATOR, _Need.WRITE)

    def query_read(self, name: str) -> bool:
        return self._segmented(_QUERY, name, _Need.READ)

    def query_write(self, name: str) -> bool:
        return self._segmented(_QUERY, name, _Need.WRITE)

    def service_read(self, name: str) -> bool:
        return self._segmented(_SERVICE, name, _Need.READ)

    def service_write(self, name: str) -> bool:
        return self._segmented(_SERVICE, name, _Need.WRITE)

    def intention_read(self, dest: str) -> bool:
        return self._segmented(_INTENTIONS, dest, _Need.READ)

    def intention_write(self, dest: str) -> bool:
        return self._segmented(_INTENTIONS, dest, _Need.WRITE)

    def intention_default_allow(self) -> bool:
        """What Connect does when no intention matches: the root's default policy."""
        auth = self
        while auth._parent is not None:
            auth = auth._parent
        return auth._allow

    def session_read(self, node: str) -> bool:
        return self._segmented(_SESSION, node, _Need.READ)

    def session_write(self, node: str) -> bool:
        return self._segmented(_SESSION, node, _Need.WRITE)

    # -- evaluation ----------------------------------------------------------------------

    def _segmented(self, kind: str, name: str, need: _Need) -> bool:
        auth: Authorizer = self
        while True:
            table = auth._tables.get(kind)
            if table is not None:
                access = table.lookup(name)
                if access is not None:
                    return need in _GRANTS[access]
            if auth._parent is None:
                return auth._allow
            auth = auth._parent

    def _unsegmented(self, resource: Resource, need: _Need) -> bool:
        auth: Authorizer = self
        while True:
            access = auth._single.get(resource)
            if access is not None:
                return need in _GRANTS[access]
            if auth._parent is None:
                return auth._manage if resource is Resource.ACL else auth._allow
            auth = auth._parent


def _static(name: str, *, allow: bool, manage: bool) -> Authorizer:
    return Authorizer({}, {}, None, allow, manage, name)


#: Deny-list mode (``default_policy = "allow"``): everything but ``acl`` and snapshots.
ALLOW_ALL: Final = _static("allow-all", allow=True, manage=False)
#: Allow-list mode (``default_policy = "deny"``).
DENY_ALL: Final = _static("deny-all", allow=False, manage=False)
#: Everything, ``acl`` included.
MANAGE_ALL: Final = _static("manage-all", allow=True, manage=True)


def default_authorizer(policy: str) -> Authorizer:
    """The parent for a ``default_policy`` (or ``down_policy``) of ``allow`` or ``deny``."""
    if policy == "allow":
        return ALLOW_ALL
    if policy == "deny":
        return DENY_ALL
    raise ValueError(f"Unsupported default ACL policy: {policy}")


def compile_authorizer(rules: Sequence[Rules], default: Authorizer) -> Authorizer:
    """Merge every policy's rules and compile them over ``default`` (the parent).

    With no rules at all the answer is ``default`` itself.
    """
    merged = _Merged()
    for each in rules:
        merged.add(each)
    if merged.empty():
        return default
    tables = {
        resource.value: _Table(merged.exact.get(resource, {}), merged.prefixes.get(resource, {}))
        for resource in merged.resources()
    }
    intentions = merged.intentions_table()
    if intentions is not None:
        tables[_INTENTIONS] = intentions
    return Authorizer(tables, dict(merged.single), default, False, False)


class _Merged:
    """Rules of many policies folded into one disposition per (resource, kind, segment)."""

    def __init__(self) -> None:
        self.exact: dict[Resource, dict[str, Access]] = {}
        self.prefixes: dict[Resource, dict[str, Access]] = {}
        self.single: dict[Resource, Access] = {}
        # Written intentions per (prefix, segment); derived from policy when absent.
        self._intentions: dict[tuple[bool, str], Access | None] = {}

    def add(self, rules: Rules) -> None:
        for rule in rules.segmented:
            self._add_rule(rule)
        for resource in (Resource.ACL, Resource.KEYRING, Resource.OPERATOR):
            access = rules.unsegmented(resource)
            if access is not None:
                self.single[resource] = _merge(self.single.get(resource), access)

    def _add_rule(self, rule: Rule) -> None:
        by_kind = self.prefixes if rule.prefix else self.exact
        table = by_kind.setdefault(rule.resource, {})
        table[rule.segment] = _merge(table.get(rule.segment), rule.policy)
        if rule.resource is Resource.SERVICE:
            key = (rule.prefix, rule.segment)
            self._intentions[key] = stronger(self._intentions.get(key), rule.intentions)

    def empty(self) -> bool:
        return not (self.exact or self.prefixes or self.single)

    def resources(self) -> Iterable[Resource]:
        return set(self.exact) | set(self.prefixes)

    def intentions_table(self) -> _Table | None:
        if not self._intentions:
            return None
        exact: dict[str, Access] = {}
        prefixes: dict[str, Access] = {}
        for (prefix, segment), written in self._intentions.items():
            policies = self.prefixes if prefix else self.exact
            policy = policies[Resource.SERVICE][segment]
            (prefixes if prefix else exact)[segment] = written or _derived_intentions(policy)
        return _Table(exact, prefixes)


def _merge(current: Access | None, new: Access) -> Access:
    result = stronger(current, new)
    assert result is not None
    return result


def _derived_intentions(policy: Access) -> Access:
    """Consul: a service ``read`` or ``write`` rule grants intentions ``read``."""
    return Access.READ if policy in (Access.READ, Access.WRITE) else Access.DENY


def service_identity_rules(name: str) -> Rules:
    """Consul's synthetic policy for a service identity (``ServiceIdentities`` on a token).

    Built directly rather than parsed, so that no name needs escaping; ``source`` holds
    the text Consul shows for it.
    """
    return Rules(
        segmented=(
            Rule(Resource.SERVICE, name, False, Access.WRITE),
            Rule(Resource.SERVICE, f"{name}-sidecar-proxy", False, Access.WRITE),
            Rule(Resource.SERVICE, "", True, Access.READ),
            Rule(Resource.NODE, "", True, Access.READ),
        ),
        source=_SERVICE_IDENTITY_TEMPLATE.format(name=name),
    )


def agent_recovery_rules(node_name: str) -> Rules:
    """The fixed policy of the agent recovery (``agent_master``) token, over ``DENY_ALL``."""
    return Rules(
        segmented=(
            Rule(Resource.AGENT, node_name, False, Access.WRITE),
            Rule(Resource.NODE, "", True, Access.READ),
        ),
    )
