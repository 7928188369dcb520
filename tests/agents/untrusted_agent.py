"""A Python entry-point agent whose import is observable (`agents.untrusted_agent:agent`).

A module's top level runs when it is imported: tests/integration/test_security.py removes this
module from `sys.modules`, makes a refused call, and checks that the module is still absent, i.e.
that the collector never imported (so never ran) it.
"""

from __future__ import annotations

from cohort.sdk.runtime import AgentContext, AgentResult, Task

MODULE = __name__


async def agent(task: Task, context: AgentContext) -> AgentResult:
    return AgentResult(success=True, final_result=f"ran {task.query_id}", score=1.0)
