"""Python entry-point agents for the collector's tests (`agents.python_agents:<name>`).

Each records what it does through `context.recorder` (Trae's methods), as a real agent would. What
the collector did to an agent that cannot say so in its trajectory (cancellation) is written to
`EVENTS`, keyed by the query id, so a test can see it reached the agent.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

from cohort.sdk.runtime import AgentContext, AgentResult, Task

EVENTS: defaultdict[str, list[str]] = defaultdict(list)
"""query id -> what happened to the rollouts of that query (`started:<seed>`, `cancelled:<seed>`)."""

TOOLS = ("search", "calculator", "answer")


def _step(context: AgentContext, number: int, tool: str, result: str) -> None:
    recorder = context.recorder
    call = {"call_id": f"call-{number}", "name": tool, "arguments": {"step": number}}
    messages = [{"role": "user", "content": context.task.text}]
    response = {
        "content": f"use {tool}",
        "model": "toolbench-sim",
        "finish_reason": "tool_calls",
        "usage": {"input_tokens": 12, "output_tokens": 4},
        "tool_calls": [call],
    }
    recorder.record_llm_interaction(messages, response, "test", "toolbench-sim", tools=list(TOOLS))
    recorder.record_agent_step(
        number,
        "calling_tool",
        llm_messages=messages,
        llm_response=response,
        tool_calls=[call],
        tool_results=[{"call_id": f"call-{number}", "success": True, "result": result}],
    )


async def ok_agent(task: Task, context: AgentContext) -> AgentResult:
    """Two steps; decides on `next_tool` when the group has a policy; reports its seed."""
    EVENTS[task.query_id].append(f"started:{context.seed}")
    steps = int(task.payload.get("steps", 2))
    chosen = []
    for number in range(1, steps + 1):
        tool = TOOLS[number % len(TOOLS)]
        if context.policy.policy_id:
            choice = await context.decide("next_tool", {"step": float(number)}, options=TOOLS)
            tool = choice.option
            chosen.append(tool)
        await asyncio.sleep(0)
        _step(context, number, tool, f"result {number}")
    context.report_usage(100, 20, model="toolbench-sim", simulated=True)
    return AgentResult(success=True, final_result=f"seed={context.seed} tools={','.join(chosen)}", score=1.0)


async def raising_agent(task: Task, context: AgentContext) -> AgentResult:
    _step(context, 1, "search", "half way")
    raise RuntimeError("the tool server exploded")


async def sleeping_agent(task: Task, context: AgentContext) -> AgentResult:
    """Sleeps `payload.sleep` seconds (default 60), writing `cancelled:<seed>` to EVENTS if cancelled."""
    EVENTS[task.query_id].append(f"started:{context.seed}")
    _step(context, 1, "search", "waiting")
    try:
        await asyncio.sleep(float(task.payload.get("sleep", 60)))
    except asyncio.CancelledError:
        EVENTS[task.query_id].append(f"cancelled:{context.seed}")
        raise
    return AgentResult(success=True, final_result="woke up")


async def garbage_agent(task: Task, context: AgentContext):
    return 42


async def mixed_agent(task: Task, context: AgentContext):
    """By rollout (seed % 4): ok, raising, sleeping past any short timeout, garbage."""
    behaviour = (ok_agent, raising_agent, sleeping_agent, garbage_agent)[context.seed % 4]
    return await behaviour(task, context)


async def deciding_agent(task: Task, context: AgentContext) -> AgentResult:
    """Asks the head named in the payload (default `next_tool`) with the payload's options."""
    options = task.payload.get("options", list(TOOLS))
    choice = await context.decide(task.payload.get("head", "next_tool"), {"x": 1.0}, options=options)
    return AgentResult(success=True, final_result=choice.option)


def sync_agent(task: Task, context: AgentContext) -> bool:
    return True


not_callable = 3


RUNNING = {"now": 0, "most": 0}
"""Rollouts of `counting_agent` running at this moment, and the most seen at once."""


async def counting_agent(task: Task, context: AgentContext) -> AgentResult:
    RUNNING["now"] += 1
    RUNNING["most"] = max(RUNNING["most"], RUNNING["now"])
    try:
        await asyncio.sleep(float(task.payload.get("sleep", 0.05)))
    finally:
        RUNNING["now"] -= 1
    return AgentResult(success=True)


async def latency_agent(task: Task, context: AgentContext) -> AgentResult:
    """`payload.steps` steps of `payload.latency` seconds each (an LLM call's stand-in), recorded."""
    steps = int(task.payload.get("steps", 5))
    latency = float(task.payload.get("latency", 0.2))
    for number in range(1, steps + 1):
        await asyncio.sleep(latency)
        _step(context, number, TOOLS[number % len(TOOLS)], f"result {number}")
    return AgentResult(success=True, final_result="done")


LEAKED_SECRET = "sk-proj-" + "Q1w2E3r4T5y6U7i8O9p0A1s2D3f4"


async def leaky_agent(task: Task, context: AgentContext) -> AgentResult:
    """One step whose tool result and final answer carry an API key; `{"nan_score": true}` also
    reports a score the store refuses, so the rollout comes back unstored."""
    _step(context, 1, TOOLS[0], f"the key is {LEAKED_SECRET}")
    score = float("nan") if task.payload.get("nan_score") else 1.0
    return AgentResult(success=True, final_result=f"use {LEAKED_SECRET}", score=score)
