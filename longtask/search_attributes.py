"""Search attributes that let the Temporal UI and `temporal workflow list` filter tasks."""

from __future__ import annotations

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client
from temporalio.common import SearchAttributeKey

TASK_STATE = SearchAttributeKey.for_keyword("LtmState")
TASK_PROGRESS = SearchAttributeKey.for_float("LtmProgress")
TASK_COST = SearchAttributeKey.for_float("LtmCostUsd")
KEYS = (TASK_STATE, TASK_PROGRESS, TASK_COST)

_EXPECTED = {
    TASK_STATE.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    TASK_PROGRESS.name: IndexedValueType.INDEXED_VALUE_TYPE_DOUBLE,
    TASK_COST.name: IndexedValueType.INDEXED_VALUE_TYPE_DOUBLE,
}


async def registered(client: Client) -> bool:
    """Whether the namespace knows all three attributes; a task upserts them only then, since
    upserting an unknown attribute would fail its workflow tasks."""
    answer = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    return all(answer.custom_attributes.get(name) == kind for name, kind in _EXPECTED.items())


async def ensure_registered(client: Client) -> None:
    """Register whichever of the attributes the namespace lacks (the embedded server's store
    outlives its restarts, so this runs at each `make up`)."""
    answer = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    missing = {n: k for n, k in _EXPECTED.items() if n not in answer.custom_attributes}
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=client.namespace, search_attributes=missing)
        )
