"""`toolbench`: an offline, deterministic multi-step tool-use environment and its agent.

Task families (`FAMILIES`) whose solutions need different sequences of 1 to 4 tool calls, tools that
fail on wrong arguments (`cohort.sdk.toolbench.tools`), a bundled knowledge base
(`cohort.sdk.toolbench.knowledge`), train and held-out query sets with disjoint entities, numbers and
phrasings (`generate_queries`), a checker (`check_answer`), and an agent built on the public runtime
interface (`make_agent`) whose `next_tool` head (`policy_heads`) is what a policy learns.
`oracle_decider` and `uniform_decider` are reference policies for tests and benchmarks.
"""

from cohort.sdk.toolbench.agent import (
    ANSWER,
    DEFAULT_MAX_STEPS,
    HEAD,
    TOOL_OPTIONS,
    AgentState,
    ParsedQuery,
    ToolbenchOptions,
    make_agent,
    oracle_choice,
    oracle_decider,
    parse_query,
    policy_heads,
    uniform_decider,
)
from cohort.sdk.toolbench.tasks import (
    FAMILIES,
    FAMILY_INTENTS,
    SOLUTIONS,
    SPLITS,
    check_answer,
    generate_queries,
    task_from_query,
)
from cohort.sdk.toolbench.tools import TOOLS, ToolError, call_tool

__all__ = [
    "ANSWER",
    "DEFAULT_MAX_STEPS",
    "FAMILIES",
    "FAMILY_INTENTS",
    "HEAD",
    "SOLUTIONS",
    "SPLITS",
    "TOOLS",
    "TOOL_OPTIONS",
    "AgentState",
    "ParsedQuery",
    "ToolError",
    "ToolbenchOptions",
    "call_tool",
    "check_answer",
    "generate_queries",
    "make_agent",
    "oracle_choice",
    "oracle_decider",
    "parse_query",
    "policy_heads",
    "task_from_query",
    "uniform_decider",
]
