"""Search attributes that let the Temporal UI and `temporal workflow list` filter tasks."""

from __future__ import annotations

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.common import SearchAttributeKey

TASK_STATE = SearchAttributeKey.for_keyword("LtmState")
TASK_PROGRESS = SearchAttributeKey.for_float("LtmProgress")
TASK_COST = SearchAttributeKey.for_float("LtmCostUsd")
KEYS = (TASK_STATE, TASK_PROGRESS, TASK_COST)

# For `temporal server start-dev --search-attribute NAME=TYPE`.
DEV_SERVER_FLAGS = [
    f"--search-attribute={TASK_STATE.name}=Keyword",
    f"--search-attribute={TASK_PROGRESS.name}=Double",
    f"--search-attribute={TASK_COST.name}=Double",
]
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
