"""Maintenance mode: the critical checks that take a node or a service out of rotation.

Rule: maintenance is nothing but a check (Consul's ``_node_maintenance`` and
``_service_maintenance:<id>``, type ``maintenance``, always critical, the reason in its
notes), so every health answer, DNS and the proxies' endpoint selection drop what is in
maintenance without knowing about it. A node check counts for every service of the node.
Pure.
"""

from __future__ import annotations

from node.catalog.values import CheckDefinition, CheckKind, Health

__all__ = [
    "NODE_MAINT_CHECK_ID",
    "SERVICE_MAINT_PREFIX",
    "DEFAULT_NODE_REASON",
    "DEFAULT_SERVICE_REASON",
    "service_maint_check_id",
    "node_maintenance_check",
    "service_maintenance_check",
    "is_maintenance",
]

NODE_MAINT_CHECK_ID = "_node_maintenance"
SERVICE_MAINT_PREFIX = "_service_maintenance:"
DEFAULT_NODE_REASON = (
    "Maintenance mode is enabled for this node, but no reason was provided. "
    "This is a default message."
)
DEFAULT_SERVICE_REASON = (
    "Maintenance mode is enabled for this service, but no reason was provided. "
    "This is a default message."
)


def service_maint_check_id(service_id: str) -> str:
    """The ID of ``service_id``'s maintenance check."""
    return SERVICE_MAINT_PREFIX + service_id


def node_maintenance_check(reason: str) -> CheckDefinition:
    """The node's maintenance check (Consul's default notes when ``reason`` is empty)."""
    return CheckDefinition(
        id=NODE_MAINT_CHECK_ID,
        name="Node Maintenance Mode",
        kind=CheckKind.MAINTENANCE,
        status=Health.CRITICAL,
        notes=reason or DEFAULT_NODE_REASON,
    )


def service_maintenance_check(service_id: str, reason: str) -> CheckDefinition:
    """``service_id``'s maintenance check (Consul's default notes when ``reason`` is empty)."""
    return CheckDefinition(
        id=service_maint_check_id(service_id),
        name="Service Maintenance Mode",
        service_id=service_id,
        kind=CheckKind.MAINTENANCE,
        status=Health.CRITICAL,
        notes=reason or DEFAULT_SERVICE_REASON,
    )


def is_maintenance(check: CheckDefinition) -> bool:
    """Whether ``check`` is a maintenance check (made here, never registered by a user)."""
    return check.kind is CheckKind.MAINTENANCE
