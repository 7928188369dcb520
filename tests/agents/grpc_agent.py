"""A Python `AgentRuntimeService` for the collector's tests: good runs and malformed event streams.

The mode comes from the query payload (`{"mode": ...}`), so one agent serves every case:
`good` (started, an LLM interaction, steps, decisions, finished), `second_finished`,
`event_after_finished`, `no_finished`, `bad_index` (a decision's chosen_index out of range),
`bad_features` (a NaN feature), `empty_event`, `abort` (the call fails with INTERNAL), `sleep`
(runs until cancelled; records the cancellation). With a policy in the RunRequest, `good` takes its
decisions from `TrainerService.Decide` at `trainer_address` with `api_key`, seeded
`seed * 1000 + n`; without one it reports a fixed decision.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict

import grpc
import grpc.aio

from cohort.api.agentruntime.v1 import agent_runtime_pb2 as arpb
from cohort.api.agentruntime.v1 import agent_runtime_pb2_grpc
from cohort.api.trainer.v1 import trainer_pb2, trainer_pb2_grpc
from cohort.api.trajectory.v1 import trajectory_pb2 as tpb

EVENTS: defaultdict[str, list[str]] = defaultdict(list)
"""rollout id -> `started`, `cancelled`; plus `requests` -> every RunRequest received."""
REQUESTS: list[arpb.RunRequest] = []
TOOLS = ("search", "calculator", "answer")


def _event(**kind) -> arpb.RunResponse:
    return arpb.RunResponse(event=arpb.AgentEvent(**kind))


def _decision(index: int = 1) -> tpb.Decision:
    return tpb.Decision(
        head="next_tool",
        options=list(TOOLS),
        chosen_index=index,
        chosen=TOOLS[index] if 0 <= index < len(TOOLS) else "",
        log_prob=-1.0986,
        probabilities=[1 / 3] * 3,
        features={"step": 1.0},
    )


class TestAgentRuntime(agent_runtime_pb2_grpc.AgentRuntimeServiceServicer):
    async def Run(self, request: arpb.RunRequest, context: grpc.aio.ServicerContext):
        REQUESTS.append(request)
        EVENTS[request.rollout_id].append("started")
        mode = json.loads(request.payload_json or "{}").get("mode", "good")
        try:
            async for response in self._events(request, mode, context):
                yield response
        except asyncio.CancelledError:
            EVENTS[request.rollout_id].append("cancelled")
            raise

    async def _events(self, request: arpb.RunRequest, mode: str, context):
        yield _event(
            started=arpb.RunStarted(
                provider="test", model="toolbench-sim", agent=tpb.AgentRef(name="py-grpc-agent", version="3")
            )
        )
        if mode == "empty_event":
            yield arpb.RunResponse(event=arpb.AgentEvent())
            return
        if mode == "abort":
            await context.abort(grpc.StatusCode.INTERNAL, "the agent fell over")
        if mode == "sleep":
            await asyncio.sleep(60)
        usage = tpb.TokenUsage(input_tokens=30, output_tokens=10)
        yield _event(
            llm_interaction=tpb.LlmInteraction(
                provider="test",
                model="toolbench-sim",
                input_messages=[tpb.Message(role="user", content=request.task)],
                response=tpb.LlmResponse(content="thinking", model="toolbench-sim", usage=usage),
            )
        )
        decision = await self._decide(request) if request.policy.policy_id else _decision()
        if mode == "bad_index":
            decision.chosen_index = 7
        if mode == "bad_features":
            decision.features["step"] = float("nan")
        yield _event(decision=decision)
        yield _event(
            step=tpb.AgentStep(
                step_number=1,
                state="calling_tool",
                tool_calls=[tpb.ToolCall(call_id="c1", name=decision.chosen, arguments_json="{}")],
                tool_results=[tpb.ToolResult(call_id="c1", success=True, result="42")],
                usage=usage,
            )
        )
        if mode == "no_finished":
            return
        finished = arpb.RunFinished(
            success=True,
            final_result=f"seed={request.seed} chose={decision.chosen}",
            score=1.0,
            termination_reason=tpb.TERMINATION_REASON_COMPLETED,
        )
        yield _event(finished=finished)
        if mode == "second_finished":
            yield _event(finished=finished)
        if mode == "event_after_finished":
            yield _event(decision=_decision())

    async def _decide(self, request: arpb.RunRequest) -> tpb.Decision:
        mode = trainer_pb2.DECISION_MODE_GREEDY if request.greedy else trainer_pb2.DECISION_MODE_SAMPLE
        async with grpc.aio.insecure_channel(request.trainer_address) as channel:
            stub = trainer_pb2_grpc.TrainerServiceStub(channel)
            response = await stub.Decide(
                trainer_pb2.DecideRequest(
                    policy_id=request.policy.policy_id,
                    version=request.policy.version,
                    head="next_tool",
                    features={"step": 1.0},
                    options=list(TOOLS),
                    mode=mode,
                    seed=request.seed * 1000,
                    exploration=request.exploration,
                ),
                metadata=(("authorization", f"Bearer {request.api_key}"),),
                timeout=10,
            )
        return response.decision


async def start_agent() -> tuple[grpc.aio.Server, str]:
    """Serves the test agent on a free local port; returns the server and its `host:port`."""
    server = grpc.aio.server()
    agent_runtime_pb2_grpc.add_AgentRuntimeServiceServicer_to_server(TestAgentRuntime(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"
