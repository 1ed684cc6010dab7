"""Layering: imports go down the layers only, and pure modules load no I/O machinery.

The layers, lowest first (DESIGN.md §8: cli → agent → api/dns → asyncio adapters →
pure logic → errors/clock/wire):

    BASE     errors, clock, wire and the other leaf helpers
    PURE     sans-I/O logic: values, parsers, state machines (and the package faces
             they are imported through)
    DRIVER   asyncio adapters: sockets, tasks, files, the RPC
    EDGE     the HTTP API (and DNS), where Consul's JSON shapes live
    AGENT    the composition root
    CLI      argv and exit codes
    TOOLS    node.testing: fakes and simulators for tests and benchmarks

A module may import its own layer and the layers below. ``RULES`` adds the edges that
the layers alone allow but the design forbids. Two checks read this table:

- every module of layer BASE or PURE is imported in a fresh interpreter, which must not
  have loaded asyncio, sockets, ssl, aiohttp or cryptography afterwards (the package
  face it is imported through counts);
- every import statement of every ``node`` module (inside functions too) is parsed and
  checked against the layers and ``RULES``.

A new module must be placed in the table (the test names the unplaced ones).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from enum import IntEnum
from functools import cache
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parent.parent


class Layer(IntEnum):
    BASE = 0
    PURE = 1
    DRIVER = 2
    EDGE = 3
    AGENT = 4
    CLI = 5
    TOOLS = 6


class Split(NamedTuple):
    """A package with a pure core and drivers; its face (``__init__``) is pure."""

    pure: tuple[str, ...]
    drivers: tuple[str, ...]


#: Top-level modules.
MODULES: dict[str, Layer] = {
    "node": Layer.BASE,
    "node.errors": Layer.BASE,
    "node.clock": Layer.BASE,
    "node.wire": Layer.BASE,
    "node.frozen": Layer.BASE,
    "node.persist": Layer.BASE,
    "node.logfmt": Layer.BASE,
    "node.userevents": Layer.PURE,
    "node.__main__": Layer.CLI,
}

#: Packages whose every module (face included) sits in one layer.
WHOLE_PACKAGES: dict[str, Layer] = {
    "node.config": Layer.PURE,
    "node.filter": Layer.PURE,
    "node.rpc": Layer.DRIVER,
    "node.api": Layer.EDGE,
    "node.agent": Layer.AGENT,
    "node.cli": Layer.CLI,
    "node.testing": Layer.TOOLS,
}

#: Packages with a pure core and drivers, module by module.
SPLIT_PACKAGES: dict[str, Split] = {
    "node.gossip": Split(
        pure=(
            "messages",
            "state",
            "suspicion",
            "broadcast",
            "protocol",
            "awareness",
            "config",
            "delegate",
            "mux",
        ),
        drivers=("transport", "runtime", "keyring"),
    ),
    "node.catalog": Split(
        pure=("values", "wire", "parse", "sidecar", "store", "queries", "maintenance"),
        drivers=("sync", "local", "checks", "watch"),
    ),
    "node.state": Split(
        pure=("hlc", "globalstate", "statesync", "primary", "retry", "consensus", "membership"),
        drivers=("replica", "writer", "replicator", "raft"),
    ),
    "node.connect": Split(
        pure=(
            "spiffe",
            "names",
            "entries",
            "chainentries",
            "chain",
            "intentions",
            "resolve",
            "castate",
            "ca",
            "records",
            "carole",
            "timing",
        ),
        drivers=(
            "authority",
            "leaf",
            "signbatch",
            "hosting",
            "leafsign",
            "cadriver",
            "federation",
            "service",
            "tls",
        ),
    ),
    "node.acl": Split(pure=("rules", "authorizer"), drivers=()),
    "node.dns": Split(pure=("names", "packet", "records", "local"), drivers=("server",)),
    "node.proxy": Split(
        pure=("sni", "snapshot", "plan", "endpoints", "gather", "metrics"),
        drivers=(
            "pollers",
            "listen",
            "relay",
            "gateway",
            "sidecar",
            "manager",
            "health",
            "feed",
        ),
    ),
}

#: Edges the layers allow but the design forbids: (importer prefix, imported prefix, why).
RULES: tuple[tuple[str, str, str], ...] = (
    ("node.rpc", "node.api", "RPC carries typed values; Consul JSON lives only in node.api"),
    ("node.proxy", "node.api", "the data plane never sees Consul JSON"),
    ("node.gossip", "node.catalog", "the catalog rides gossip through a delegate"),
    ("node.gossip", "node.connect", "gossip knows nothing of what it carries"),
    ("node.proxy", "node.catalog.store", "the proxy reads catalog queries, never the store"),
    ("node.state", "node.connect", "global state knows nothing of what it stores"),
)

#: Only these may import node.cli and node.agent.
TOP_IMPORTERS = ("node.cli", "node.agent", "node.__main__")

#: What a pure module must not have loaded, even indirectly.
IO_MODULES = ("asyncio", "socket", "ssl", "aiohttp", "selectors", "uvloop", "cryptography")

#: Pure modules whose job needs one of IO_MODULES (and nothing else of the list).
IO_ALLOWED: dict[str, tuple[str, ...]] = {
    # X.509 is cryptography's job; ca has no I/O. cryptography.x509 itself loads
    # email.utils, which loads socket (and selectors).
    "node.connect.ca": ("cryptography", "socket", "selectors"),
    # The DNS wire format is dnspython's job; these modules do no I/O, but dnspython's
    # address helpers (dns.inet) load socket when imported.
    "node.dns.packet": ("socket", "selectors"),
    "node.dns.records": ("socket", "selectors"),
    "node.dns.local": ("socket", "selectors"),
}


class KnownLoad(NamedTuple):
    """What a pure module still loads on this tree, and why."""

    loads: tuple[str, ...]
    why: str


#: Import-time loads that are still wrong on this tree: module → what and why. Anything
#: else these modules load fails as for any module; the listed loads are strict xfails.
KNOWN_LOADS: dict[str, KnownLoad] = {}

#: Pure modules that cannot be imported first in a fresh interpreter: module → why.
KNOWN_BROKEN: dict[str, str] = {}

#: Import edges that are still wrong on this tree: (importer, imported, why) (strict xfail).
KNOWN_EDGES: tuple[tuple[str, str, str], ...] = ()


# -- the tree ---------------------------------------------------------------------------


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def tree_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted((ROOT / "node").rglob("*.py"))}


@cache
def layer_table() -> dict[str, Layer]:
    """Every module named by the tables above → its layer."""
    table = dict(MODULES)
    for package, split in SPLIT_PACKAGES.items():
        table[package] = Layer.PURE
        table.update({f"{package}.{m}": Layer.PURE for m in split.pure})
        table.update({f"{package}.{m}": Layer.DRIVER for m in split.drivers})
    return table


def layer_of(module: str) -> Layer | None:
    named = layer_table().get(module)
    if named is not None:
        return named
    for package, layer in WHOLE_PACKAGES.items():
        if module == package or module.startswith(package + "."):
            return layer
    return None


def pure_modules() -> list[str]:
    return sorted(m for m in tree_modules() if layer_of(m) in (Layer.BASE, Layer.PURE))


# -- reading imports ----------------------------------------------------------------------


def imported_modules(module: str, path: Path) -> Iterator[str]:
    """The ``node`` modules ``module`` imports, by any statement anywhere in its body."""
    known = tree_modules()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module if path.name == "__init__.py" else module.rpartition(".")[0]
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            # ``from pkg import sub`` imports the submodule; ``from mod import name`` the module.
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names
            ]
        else:
            continue
        yield from (t for t in targets if t == "node" or t.startswith("node."))


def violations(importer: str, imported: str) -> list[str]:
    """Why ``importer`` may not import ``imported`` (empty when it may)."""
    found = []
    low, high = layer_of(importer), layer_of(imported)
    if low is not None and high is not None and high > low:
        found.append(f"goes up from {low.name} to {high.name}")
    for src, dst, why in RULES:
        if _under(importer, src) and _under(imported, dst):
            found.append(why)
    if _under(imported, "node.testing") and not _under(importer, "node.testing"):
        found.append("node.testing is for tests and benchmarks only")
    top = ("node.cli", "node.agent")
    if any(_under(imported, t) for t in top) and not any(
        _under(importer, t) for t in TOP_IMPORTERS
    ):
        found.append("only the cli, the agent and __main__ import the cli or the agent")
    return found


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


@cache
def edges() -> dict[tuple[str, str], list[str]]:
    """Every wrong (importer, imported) edge of the tree → its reasons."""
    wrong: dict[tuple[str, str], list[str]] = {}
    for module, path in tree_modules().items():
        for imported in imported_modules(module, path):
            reasons = violations(module, imported)
            if reasons:
                wrong[(module, imported)] = reasons
    return wrong


# -- loading pure modules in fresh interpreters -------------------------------------------

# One clean interpreter forks a child per module: each child starts with nothing of
# ``node`` loaded, as a fresh interpreter would, without paying a start-up per module.
_PROBE = r"""
import importlib, json, os, sys
io = sys.argv[1].split(",")
already = [m for m in io if m in sys.modules]
if already:
    raise SystemExit(f"the probe itself loaded {already}")
report = {}
for name in sys.stdin.read().split():
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        error = None
        try:
            importlib.import_module(name)
        except BaseException as exc:
            error = f"import failed: {exc!r}"
        result = {"loaded": [m for m in io if m in sys.modules], "error": error}
        os.write(write, json.dumps(result).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        report[name] = json.loads(pipe.read())
    os.waitpid(pid, 0)
print(json.dumps(report))
"""


class Loaded(NamedTuple):
    """What importing one module in a fresh interpreter loaded, or why it failed."""

    loaded: tuple[str, ...]
    error: str | None


@pytest.fixture(scope="module")
def probe() -> dict[str, Loaded]:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, ",".join(IO_MODULES)],
        input="\n".join(pure_modules()),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=True,
    )
    report = json.loads(proc.stdout)
    return {m: Loaded(tuple(r["loaded"]), r["error"]) for m, r in report.items()}


# -- the checks --------------------------------------------------------------------------


def test_every_module_has_a_layer() -> None:
    unplaced = sorted(m for m in tree_modules() if layer_of(m) is None)
    assert not unplaced, f"place these modules in a layer of tests/test_layering.py: {unplaced}"


def test_table_names_existing_modules() -> None:
    stale = sorted(m for m in layer_table() if m not in tree_modules())
    assert not stale, f"tests/test_layering.py names modules that do not exist: {stale}"


@pytest.mark.parametrize("module", pure_modules())
def test_pure_module_loads_no_io(module: str, probe: dict[str, Loaded]) -> None:
    result = probe[module]
    if module not in KNOWN_BROKEN:
        assert result.error is None, result.error
    known = KNOWN_LOADS[module].loads if module in KNOWN_LOADS else ()
    wrong = [m for m in result.loaded if m not in IO_ALLOWED.get(module, ()) + known]
    assert not wrong, f"importing {module} in a fresh interpreter loads {wrong}"


def _xfail(why: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(strict=True, reason=why)


@pytest.mark.parametrize(
    "module", [pytest.param(m, marks=_xfail(f"{m}: {k.why}")) for m, k in KNOWN_LOADS.items()]
)
def test_known_wrong_load_is_gone(module: str, probe: dict[str, Loaded]) -> None:
    allowed = IO_ALLOWED.get(module, ())
    still = [m for m in probe[module].loaded if m in KNOWN_LOADS[module].loads and m not in allowed]
    assert not still, f"importing {module} still loads {still}"


@pytest.mark.parametrize(
    "module", [pytest.param(m, marks=_xfail(f"{m}: {why}")) for m, why in KNOWN_BROKEN.items()]
)
def test_known_broken_import_is_fixed(module: str, probe: dict[str, Loaded]) -> None:
    assert probe[module].error is None, probe[module].error


@pytest.mark.parametrize("module", sorted(tree_modules()))
def test_imports_go_down(module: str) -> None:
    wrong = {
        imported: reasons
        for (importer, imported), reasons in edges().items()
        if importer == module and (importer, imported) not in _known_edges()
    }
    assert not wrong, f"{module} imports against the layers: {wrong}"


def _known_edges() -> set[tuple[str, str]]:
    return {(importer, imported) for importer, imported, _ in KNOWN_EDGES}


@pytest.mark.parametrize(
    ("importer", "imported"),
    [pytest.param(a, b, marks=_xfail(f"{a} → {b}: {why}")) for a, b, why in KNOWN_EDGES],
)
def test_known_wrong_edge_is_gone(importer: str, imported: str) -> None:
    assert (importer, imported) not in edges(), f"{importer} still imports {imported}"


def test_checker_sees_a_wrong_import() -> None:
    assert violations("node.proxy.plan", "node.proxy.gateway")
    assert violations("node.proxy.snapshot", "node.api.codec")
    assert violations("node.gossip.protocol", "node.catalog.store")
    assert violations("node.catalog.store", "node.testing.clock")
    assert not violations("node.proxy.feed", "node.proxy.plan")
