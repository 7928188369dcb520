"""Trae Agent's own LLM types, as its recorder receives them (attributes, not dicts).

Shared by the recorder tests and the recorder benchmark, which drive `TrajectoryRecorder` exactly as
Trae's agent loop does.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class LLMUsage:
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    reasoning_tokens: int | None = None


@dataclass
class ToolCall:
    name: str
    call_id: str
    arguments: dict
    id: str | None = None


@dataclass
class ToolResult:
    call_id: str
    name: str
    success: bool
    result: str | None = None
    error: str | None = None
    id: str | None = None


@dataclass
class LLMMessage:
    role: str
    content: str | None = None
    tool_call: ToolCall | None = None
    tool_result: ToolResult | None = None


@dataclass
class LLMResponse:
    content: str
    usage: LLMUsage | None
    model: str
    finish_reason: str
    tool_calls: list[ToolCall] = field(default_factory=list)


@dataclass
class Tool:
    name: str
