"""Write your own durable long task: a Temporal workflow whose model, embedding and tool calls
are typed, time-limited, retried, checkpointed activities (docs/agents.md).

```python
@long_task(name="Translate")
class Translate(LongTask):
    async def work(self, ctx: TaskContext, request: TranslateInput) -> Translation: ...
```
"""

from longtask.agent._context import BudgetExceededError, MapCallsError, TaskContext
from longtask.agent._models import (
    AgentCarry,
    AgentStatus,
    EmbedAnswer,
    EmbedRequest,
    LongTaskInput,
    MapCallsAnswer,
    MapCallsRequest,
    ModelAnswer,
    ModelCallRequest,
    TaskOutcome,
    ToolAnswer,
    ToolCall,
    ToolRequest,
)
from longtask.agent._progress import Progress
from longtask.agent._start import (
    NoCheckpointError,
    new_task_id,
    resume_long_task,
    resume_task_by_name,
    start_long_task,
    start_task_by_name,
    task_defaults,
)
from longtask.agent._task import LongTask, long_task
from longtask.agent._tools import Tool, ToolEnv, registered_tools, tool
from longtask.engine.names import (
    CALL_MODEL,
    CALL_MODELS,
    CALL_RETRYING_SIGNAL,
    EMBED_TEXTS,
    INVALID_TOOL_ARGUMENTS,
    TOOL_ACTIVITY_PREFIX,
)

__all__ = [
    "CALL_MODEL",
    "CALL_MODELS",
    "CALL_RETRYING_SIGNAL",
    "EMBED_TEXTS",
    "INVALID_TOOL_ARGUMENTS",
    "TOOL_ACTIVITY_PREFIX",
    "AgentCarry",
    "AgentStatus",
    "BudgetExceededError",
    "EmbedAnswer",
    "EmbedRequest",
    "LongTask",
    "LongTaskInput",
    "MapCallsAnswer",
    "MapCallsError",
    "MapCallsRequest",
    "ModelAnswer",
    "ModelCallRequest",
    "NoCheckpointError",
    "Progress",
    "TaskContext",
    "TaskOutcome",
    "Tool",
    "ToolAnswer",
    "ToolCall",
    "ToolEnv",
    "ToolRequest",
    "long_task",
    "new_task_id",
    "registered_tools",
    "resume_long_task",
    "resume_task_by_name",
    "start_long_task",
    "start_task_by_name",
    "task_defaults",
    "tool",
]
