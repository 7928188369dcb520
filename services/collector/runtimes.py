"""Agent runtimes: resolving a `RuntimeSpec` to a runner that performs one rollout at a time.

Three kinds:

- `python`: an async function `module:function` imported into the collector's process and called
  as `await agent(task, context)` with a `cohort.sdk.runtime.AgentContext` whose recorder is an
  in-memory `TrajectoryRecorder` (`sink="memory"`) and whose decider evaluates the policy locally.
  Only an admin key, or an entry point in `COHORT_PYTHON_RUNTIME_ALLOWLIST`, gets it imported
  (`authorize_python_entry_point`, checked before the import).
- `toolbench`: the same, with the built-in agent `cohort.sdk.toolbench.make_agent(ToolbenchOptions(...))`.
- `grpc`: an agent implementing `cohort.api.agentruntime.v1.AgentRuntimeService` at an address. The
  collector calls `Run` once per rollout and turns the event stream into a trajectory; the agent
  calls `TrainerService.Decide` itself. Cancelling the rollout cancels the call.

A runner never decides how a rollout ends when something goes wrong: it raises, and the collection
(`cohort.services.collector.collection`) records TIMEOUT, CANCELLED or ERROR with the detail on the
rollout's `RolloutRecording`, which always yields a trajectory.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
import grpc.aio

from cohort.api.agentruntime.v1 import agent_runtime_pb2, agent_runtime_pb2_grpc
from cohort.api.collector.v1 import collector_pb2
from cohort.api.trajectory.v1 import trajectory_pb2
from cohort.platform.config import Settings
from cohort.platform.context import Identity, require_identity
from cohort.platform.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from cohort.sdk.journal import termination_name, utc_now
from cohort.sdk.recorder import TrajectoryRecorder
from cohort.sdk.runtime import AgentContext, AgentResult, Decider, Task, as_agent_result
from cohort.sdk.trajectories.usage import PriceTable

PROBE_TIMEOUT_SECONDS = 3.0
"""How long the collector waits to connect to a gRPC agent before refusing the group."""
CALL_GRACE_SECONDS = 1.0
"""The `Run` deadline is the rollout timeout plus this, so the collector's own timeout fires first."""
TOOLBENCH_AGENT = trajectory_pb2.AgentRef(name="toolbench-agent", version="1")
_ENTRY_POINT = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*")
_TERMINAL_REASONS = {
    trajectory_pb2.TERMINATION_REASON_COMPLETED,
    trajectory_pb2.TERMINATION_REASON_MAX_STEPS,
    trajectory_pb2.TERMINATION_REASON_ERROR,
    trajectory_pb2.TERMINATION_REASON_BUDGET_EXHAUSTED,
}


class MalformedEvent(Exception):
    """A remote agent streamed something the contract does not allow; the rollout ends ERROR."""


@dataclass(frozen=True)
class Rollout:
    """One rollout of a group: what the runner needs to run it and to tag its trajectory."""

    index: int
    trajectory_id: str
    query: collector_pb2.Query
    task: Task
    seed: int
    greedy: bool
    max_steps: int
    timeout_seconds: float
    job_id: str
    group_id: str
    iteration: int
    agent: trajectory_pb2.AgentRef
    policy: trajectory_pb2.PolicyRef
    labels: Mapping[str, str] = field(default_factory=dict)
    exploration: float = 0.0
    """ε of the rollout's sampled decisions (0 when greedy)."""


class RolloutRecording(Protocol):
    """What one rollout recorded so far; always able to produce a trajectory."""

    def fail(self, reason: str, detail: str) -> None:
        """Ends the recording with termination `reason` (timeout, cancelled, error, ...) unless ended."""

    def trajectory(self) -> trajectory_pb2.Trajectory:
        """The finished trajectory (call after the run ended or `fail`)."""


class Runner(Protocol):
    kind: str
    needs_policy: bool
    """True when the runner cannot run without a policy (the request is refused when it has none)."""
    required_heads: tuple[str, ...]
    """Heads the policy must have, checked before the group starts (empty: unknown in advance)."""
    agent: trajectory_pb2.AgentRef
    """The agent recorded when the request names none."""

    async def prepare(self) -> None:
        """Checks the runtime can be used (a gRPC agent is reachable) before any rollout starts."""

    def recording(self, rollout: Rollout) -> RolloutRecording: ...

    async def run(self, rollout: Rollout, recording: RolloutRecording, decider: Decider | None) -> None:
        """Runs the agent to its end, recording into `recording`; raises when the rollout fails."""


# --- Python agents (and toolbench) -------------------------------------------------------------------


class RecorderRecording:
    """A rollout recorded by an in-memory `TrajectoryRecorder` (Trae fields, decisions, termination)."""

    def __init__(self, rollout: Rollout, *, provider: str, model: str, prices: PriceTable) -> None:
        self.rollout = rollout
        self.prices = prices
        self.context: AgentContext | None = None
        self.recorder = TrajectoryRecorder(
            sink="memory",
            # The collector's store redacts each trajectory it stores (and the collector one it
            # could not store) before it leaves the process: redacting each event too is waste.
            redact=False,
            prices=prices,
            agent_name=rollout.agent.name,
            agent_version=rollout.agent.version,
            labels=rollout.labels,
            trajectory_id=rollout.trajectory_id,
            job_id=rollout.job_id,
            group_id=rollout.group_id,
            iteration=rollout.iteration,
            query_id=rollout.query.query_id,
        )
        self.recorder.start_recording(rollout.task.text, provider, model, rollout.max_steps or None)

    def complete(self, result: AgentResult) -> None:
        recorder = self.recorder
        if recorder.finalized:
            return  # the agent finalized the recording itself
        success = bool(result.success)
        if result.success is not None:
            recorder.set_outcome("success" if success else "failure", result.score)
        recorder.set_termination(result.termination or "completed", result.detail)
        recorder.finalize_recording(success, result.final_result)

    def fail(self, reason: str, detail: str) -> None:
        if self.recorder.finalized:
            return
        self.recorder.set_termination(reason, detail)
        self.recorder.finalize_recording(False)

    def trajectory(self) -> trajectory_pb2.Trajectory:
        if not self.recorder.finalized:
            self.fail("error", "the rollout ended without a result")
        trajectory = self.recorder.trajectory
        if trajectory is None:  # the recorder could not build it: say so rather than lose the rollout
            trajectory = _bare_trajectory(self.rollout)
            _end(trajectory, trajectory_pb2.TERMINATION_REASON_ERROR, "the recording could not be built")
        context = self.context
        if context is not None and (context.usage.input_tokens or context.usage.output_tokens):
            # Usage the agent reported with `report_usage` is its own account of the run: it wins over
            # usage summed from recorded interactions (which an agent may also record), never both.
            trajectory.total_usage.CopyFrom(context.usage)
            model = context.usage_model or trajectory.model
            trajectory.cost_micro_usd = self.prices.price_micro_usd(model, context.usage)
        return trajectory


AgentFunction = Callable[[Task, AgentContext], Any]


class PythonRunner:
    """An async agent function run in the collector's process under the in-memory recorder."""

    kind = "python"
    required_heads: tuple[str, ...] = ()

    def __init__(
        self,
        agent: AgentFunction,
        *,
        agent_ref: trajectory_pb2.AgentRef,
        prices: PriceTable,
        needs_policy: bool = False,
        required_heads: tuple[str, ...] = (),
        provider: str = "",
        model: str = "",
        task_of: Callable[[collector_pb2.Query], Task] | None = None,
    ) -> None:
        self._agent = agent
        self.agent = agent_ref
        self.needs_policy = needs_policy
        self.required_heads = required_heads
        self._prices = prices
        self._provider = provider
        self._model = model
        self.task_of = task_of or task_from_query

    async def prepare(self) -> None:
        return None

    def recording(self, rollout: Rollout) -> RecorderRecording:
        return RecorderRecording(rollout, provider=self._provider, model=self._model, prices=self._prices)

    async def run(self, rollout: Rollout, recording: RolloutRecording, decider: Decider | None) -> None:
        assert isinstance(recording, RecorderRecording)
        context = AgentContext(
            rollout.task,
            decider=decider or _no_policy,
            recorder=recording.recorder,
            seed=rollout.seed,
            greedy=rollout.greedy,
            max_steps=rollout.max_steps,
            policy=rollout.policy,
            exploration=rollout.exploration,
        )
        recording.context = context
        value = await self._agent(rollout.task, context)
        recording.complete(as_agent_result(value))


async def _no_policy(request: Any) -> trajectory_pb2.Decision:
    raise FailedPrecondition(
        f"the agent asked head {request.head!r} for a decision but the CollectGroup request has no "
        "`policy`: set `policy` for agents that decide"
    )


def task_from_query(query: collector_pb2.Query) -> Task:
    """The `Task` of a query; `payload_json` must be a JSON object (or empty)."""
    payload: Any = {}
    if query.payload_json.strip():
        try:
            payload = json.loads(query.payload_json)
        except ValueError as exc:
            raise InvalidArgument("query.payload_json", f"is not valid JSON: {exc}") from exc
        if not isinstance(payload, dict):
            raise InvalidArgument("query.payload_json", "must be a JSON object")
    return Task(
        query_id=query.query_id, text=query.text, payload=payload, expected_answer=query.expected_answer
    )


def _checked_entry_point(entry_point: str, name: str) -> str:
    entry_point = entry_point.strip()
    if not entry_point:
        raise InvalidArgument(name, "is required: `package.module:function`")
    if not _ENTRY_POINT.fullmatch(entry_point):
        raise InvalidArgument(name, f"{entry_point!r} is not of the form `package.module:function`")
    return entry_point


def authorize_python_entry_point(
    entry_point: str,
    identity: Identity,
    allowlist: Sequence[str],
    *,
    field: str = "runtime.python.entry_point",
) -> str:
    """The entry point, if `identity` may run it in-process; imports nothing.

    Running Python code inside the collector is an administrator's decision, like registering a
    Python reward function: an admin key may name any entry point, any other key only one listed
    in `COHORT_PYTHON_RUNTIME_ALLOWLIST` (`package.module:function`, or `package.module:*` for
    every function of that module). INVALID_ARGUMENT naming `field` when malformed,
    PERMISSION_DENIED naming the entry point when not allowed.
    """
    entry_point = _checked_entry_point(entry_point, field)
    if identity.is_admin or python_entry_point_allowed(entry_point, allowlist):
        return entry_point
    raise PermissionDenied(
        f"the Python runtime entry point {entry_point!r} ({field}) runs code inside the collector, "
        "which needs an admin API key; an administrator can allow it for every key by adding "
        f"{entry_point!r} (or '{entry_point.partition(':')[0]}:*') to COHORT_PYTHON_RUNTIME_ALLOWLIST "
        "of the collector and jobs processes",
        reason="PYTHON_RUNTIME_NOT_ALLOWED",
        metadata={"entry_point": entry_point, "field": field},
    )


def python_entry_point_allowed(entry_point: str, allowlist: Sequence[str]) -> bool:
    module_name = entry_point.partition(":")[0]
    return entry_point in allowlist or f"{module_name}:*" in allowlist


def load_entry_point(entry_point: str) -> AgentFunction:
    """Imports `package.module:function`; INVALID_ARGUMENT naming `runtime.python.entry_point` if unusable.

    Call `authorize_python_entry_point` first: importing runs the module's code.
    """
    name = "runtime.python.entry_point"
    entry_point = _checked_entry_point(entry_point, name)
    module_name, _, attribute = entry_point.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import failure is the caller's bad entry point
        raise InvalidArgument(
            name, f"cannot import module {module_name!r}: {type(exc).__name__}: {exc}"
        ) from exc
    target: Any = module
    for part in attribute.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise InvalidArgument(name, f"module {module_name!r} has no attribute {attribute!r}")
    call_method = type(target).__call__ if callable(target) else None
    if not (inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(call_method)):
        raise InvalidArgument(
            name, f"{entry_point!r} is not an async function (`async def agent(task, context)`)"
        )
    return target


# --- gRPC agents -----------------------------------------------------------------------------------


class StreamRecording:
    """A rollout of a remote agent: its events applied to a `Trajectory` as they arrive."""

    def __init__(self, rollout: Rollout, *, address: str) -> None:
        self.address = address
        self.t = _bare_trajectory(rollout)
        self.t.start_time.FromDatetime(utc_now())
        if rollout.max_steps:
            self.t.max_steps = rollout.max_steps
        self._agent_named = bool(rollout.agent.name)
        self.events = 0
        self.finished = False
        self.ended = False

    def apply(self, event: agent_runtime_pb2.AgentEvent) -> None:
        """Adds one event; `MalformedEvent` when the contract does not allow it."""
        kind = event.WhichOneof("kind")
        position = self.events
        self.events += 1
        if self.finished:
            raise MalformedEvent(f"event {position} ({kind or 'empty'}) arrived after `finished`")
        t = self.t
        if kind == "started":
            if position != 0:
                raise MalformedEvent(f"event {position}: `started` must be the first event")
            t.provider = event.started.provider
            t.model = event.started.model
            if not self._agent_named:
                t.agent.CopyFrom(event.started.agent)
        elif kind == "llm_interaction":
            t.llm_interactions.add().CopyFrom(event.llm_interaction)
        elif kind == "step":
            step = t.agent_steps.add()
            step.CopyFrom(event.step)
            if not step.step_number:
                step.step_number = len(t.agent_steps)
            if not step.HasField("timestamp"):
                step.timestamp.FromDatetime(utc_now())
        elif kind == "decision":
            t.decisions.add().CopyFrom(_checked_decision(event.decision, position, len(t.agent_steps)))
            if not t.policy.policy_id and event.decision.policy.policy_id:
                t.policy.CopyFrom(event.decision.policy)
        elif kind == "finished":
            self._finish(event.finished, position)
        else:
            raise MalformedEvent(f"event {position} has no kind (one of started, llm_interaction, step, ...)")

    def _finish(self, finished: agent_runtime_pb2.RunFinished, position: int) -> None:
        reason = finished.termination_reason or trajectory_pb2.TERMINATION_REASON_COMPLETED
        if reason not in _TERMINAL_REASONS:
            name = trajectory_pb2.TerminationReason.Name(reason) if reason in _KNOWN_REASONS else str(reason)
            raise MalformedEvent(
                f"event {position}: `finished.termination_reason` {name} is not one an agent reports "
                "(COMPLETED, MAX_STEPS, ERROR, BUDGET_EXHAUSTED)"
            )
        if finished.HasField("score") and not (math.isfinite(finished.score) and 0 <= finished.score <= 1):
            raise MalformedEvent(
                f"event {position}: `finished.score` must be in [0, 1], not {finished.score}"
            )
        self.finished = True
        t = self.t
        t.final_result = finished.final_result
        t.outcome.kind = (
            trajectory_pb2.OUTCOME_KIND_SUCCESS if finished.success else trajectory_pb2.OUTCOME_KIND_FAILURE
        )
        t.outcome.confidence = 1.0
        if finished.HasField("score"):
            t.outcome.score = finished.score
        _end(t, reason, finished.detail, success=finished.success)

    def end_of_stream(self) -> None:
        if not self.finished:
            raise MalformedEvent(
                f"the agent's event stream ended after {self.events} events without `finished`"
            )

    def fail(self, reason: str, detail: str) -> None:
        if self.ended:
            return
        self.ended = True
        if self.finished:  # `finished` came, then the stream broke the contract or ran out of time
            self.t.ClearField("outcome")
        _end(self.t, trajectory_pb2.TerminationReason.Value(termination_name(reason)), detail)

    def trajectory(self) -> trajectory_pb2.Trajectory:
        if not self.finished and not self.ended:
            self.fail("error", "the rollout ended without a result")
        return self.t


_KNOWN_REASONS = frozenset(trajectory_pb2.TerminationReason.values())


def _checked_decision(
    decision: trajectory_pb2.Decision, position: int, steps: int
) -> trajectory_pb2.Decision:
    where = f"event {position}: decision"
    options = list(decision.options)
    if not decision.head:
        raise MalformedEvent(f"{where} has no `head`")
    if not options:
        raise MalformedEvent(f"{where} on {decision.head!r} has no `options`")
    if len(set(options)) != len(options):
        raise MalformedEvent(f"{where} on {decision.head!r} has duplicated `options`")
    if not 0 <= decision.chosen_index < len(options):
        raise MalformedEvent(
            f"{where} on {decision.head!r}: `chosen_index` {decision.chosen_index} is out of range "
            f"for {len(options)} options"
        )
    if decision.chosen and decision.chosen != options[decision.chosen_index]:
        raise MalformedEvent(f"{where} on {decision.head!r}: `chosen` is not `options[chosen_index]`")
    if not math.isfinite(decision.log_prob) or decision.log_prob > 1e-9:
        raise MalformedEvent(f"{where} on {decision.head!r}: `log_prob` must be a finite value <= 0")
    if decision.probabilities and (
        len(decision.probabilities) != len(options)
        or any(not (math.isfinite(p) and 0.0 <= p <= 1.0) for p in decision.probabilities)
    ):
        raise MalformedEvent(
            f"{where} on {decision.head!r}: `probabilities` must be one value in [0, 1] per option"
        )
    for name, value in decision.features.items():
        if not math.isfinite(value):
            raise MalformedEvent(f"{where} on {decision.head!r}: feature {name!r} is not finite")
    if decision.option_features and len(decision.option_features) != len(options):
        raise MalformedEvent(f"{where} on {decision.head!r}: `option_features` must have one map per option")
    for i, values in enumerate(decision.option_features):
        for name, value in values.values.items():
            if not math.isfinite(value):
                raise MalformedEvent(
                    f"{where} on {decision.head!r}: option {i} feature {name!r} is not finite"
                )
    checked = trajectory_pb2.Decision()
    checked.CopyFrom(decision)
    checked.chosen = options[decision.chosen_index]
    if not checked.step_number:
        checked.step_number = steps + 1
    if not checked.HasField("timestamp"):
        checked.timestamp.FromDatetime(utc_now())
    return checked


class GrpcRunner:
    """An agent behind `AgentRuntimeService.Run` at an address; it decides through `TrainerService.Decide`."""

    kind = "grpc"
    needs_policy = False
    required_heads: tuple[str, ...] = ()

    def __init__(
        self,
        address: str,
        channel: grpc.aio.Channel,
        *,
        agent_ref: trajectory_pb2.AgentRef,
        trainer_address: str,
        api_key: str,
        forget_channel: Callable[[], None],
    ) -> None:
        self.address = address
        self.agent = agent_ref
        self._channel = channel
        self._stub = agent_runtime_pb2_grpc.AgentRuntimeServiceStub(channel)
        self._trainer_address = trainer_address
        self._api_key = api_key
        self._forget_channel = forget_channel
        self.task_of = task_from_query

    async def prepare(self) -> None:
        """Connects before the group starts: a refused connection fails at once, silence after a while."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PROBE_TIMEOUT_SECONDS
        why = f"no connection within {PROBE_TIMEOUT_SECONDS:g} s"
        try:
            state = self._channel.get_state(try_to_connect=True)
            while state != grpc.ChannelConnectivity.READY:
                if state == grpc.ChannelConnectivity.TRANSIENT_FAILURE:
                    why = "the connection failed"
                    break
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    await asyncio.wait_for(self._channel.wait_for_state_change(state), remaining)
                except TimeoutError:
                    break
                state = self._channel.get_state(try_to_connect=True)
            else:
                return
        except grpc.aio.UsageError:
            # A sibling group found the runtime unreachable first and closed the shared channel.
            why = "the connection failed"
        self._forget_channel()
        raise FailedPrecondition(
            f"the agent runtime at {self.address!r} (runtime.grpc.address) is not reachable: {why}",
            reason="AGENT_UNREACHABLE",
            metadata={"address": self.address},
        )

    def recording(self, rollout: Rollout) -> StreamRecording:
        return StreamRecording(rollout, address=self.address)

    async def run(self, rollout: Rollout, recording: RolloutRecording, decider: Decider | None) -> None:
        assert isinstance(recording, StreamRecording)
        request = agent_runtime_pb2.RunRequest(
            rollout_id=rollout.trajectory_id,
            task=rollout.query.text,
            query_id=rollout.query.query_id,
            payload_json=rollout.query.payload_json,
            policy=rollout.policy,
            trainer_address=self._trainer_address,
            api_key=self._api_key,
            seed=rollout.seed,
            greedy=rollout.greedy,
            exploration=rollout.exploration,
            max_steps=rollout.max_steps,
            job_id=rollout.job_id,
            group_id=rollout.group_id,
            iteration=rollout.iteration,
        )
        request.timeout.FromNanoseconds(int(rollout.timeout_seconds * 1e9))
        call = self._stub.Run(request, timeout=rollout.timeout_seconds + CALL_GRACE_SECONDS)
        try:
            async for response in call:
                recording.apply(response.event)
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise TimeoutError(f"the agent's Run call passed its deadline: {error.details()}") from None
            raise RuntimeError(
                f"the agent at {self.address} failed: {error.code().name}: {error.details()}"
            ) from None
        finally:
            call.cancel()  # a no-op when the stream ended; stops the agent on errors and cancellation
        recording.end_of_stream()


# --- Resolving a RuntimeSpec -----------------------------------------------------------------------


class RuntimeResolver:
    """Turns a `RuntimeSpec` into a runner; keeps one channel per gRPC agent address."""

    def __init__(self, prices: PriceTable) -> None:
        self._prices = prices
        self._channels: dict[tuple[str, bool], grpc.aio.Channel] = {}

    def resolve(self, spec: collector_pb2.RuntimeSpec, *, settings: Settings, caller_api_key: str) -> Runner:
        """The runner of `spec`; INVALID_ARGUMENT naming the field when the spec cannot be used."""
        kind = spec.WhichOneof("kind")
        if kind == "python":
            authorize_python_entry_point(
                spec.python.entry_point, require_identity(), settings.python_runtime_allowlist
            )
            agent = load_entry_point(spec.python.entry_point)
            ref = (
                spec.agent
                if spec.agent.name
                else trajectory_pb2.AgentRef(name=spec.python.entry_point.strip())
            )
            return PythonRunner(agent, agent_ref=ref, prices=self._prices)
        if kind == "toolbench":
            return self._toolbench(spec)
        if kind == "grpc":
            return self._grpc(spec, settings=settings, caller_api_key=caller_api_key)
        raise InvalidArgument("runtime", "set one runtime kind: python, grpc or toolbench")

    def _toolbench(self, spec: collector_pb2.RuntimeSpec) -> PythonRunner:
        from cohort.sdk import toolbench

        options = spec.toolbench
        unknown = [f for f in options.task_families if f not in toolbench.FAMILIES]
        if unknown:
            raise InvalidArgument(
                "runtime.toolbench.task_families",
                f"unknown family {unknown[0]!r}; known: {', '.join(toolbench.FAMILIES)}",
            )
        latency = options.simulated_step_latency.ToNanoseconds() / 1e9
        if latency < 0:
            raise InvalidArgument("runtime.toolbench.simulated_step_latency", "must not be negative")
        if options.simulated_tokens_per_step < 0:
            raise InvalidArgument("runtime.toolbench.simulated_tokens_per_step", "must not be negative")
        defaults = toolbench.ToolbenchOptions()
        model = options.simulated_model or defaults.model
        agent = toolbench.make_agent(
            toolbench.ToolbenchOptions(
                task_families=tuple(options.task_families),
                step_latency_seconds=latency,
                tokens_per_step=int(options.simulated_tokens_per_step),
                model=model,
                avoid_repeating_failed_calls=options.avoid_repeating_failed_calls,
            )
        )
        return PythonRunner(
            agent,
            agent_ref=spec.agent if spec.agent.name else TOOLBENCH_AGENT,
            prices=self._prices,
            needs_policy=True,
            required_heads=tuple(head.name for head in toolbench.policy_heads()),
            provider="toolbench",
            model=model,
            task_of=toolbench.task_from_query,
        )

    def _grpc(
        self, spec: collector_pb2.RuntimeSpec, *, settings: Settings, caller_api_key: str
    ) -> GrpcRunner:
        address = spec.grpc.address.strip()
        if not address:
            raise InvalidArgument("runtime.grpc.address", "is required: `host:port` of the agent runtime")
        if any(c.isspace() for c in address) or ":" not in address:
            raise InvalidArgument("runtime.grpc.address", f"{address!r} is not `host:port`")
        key = (address, spec.grpc.use_tls)
        channel = self._channels.get(key)
        if channel is None:
            channel = self._channels[key] = _open_channel(address, spec.grpc.use_tls, settings)
        return GrpcRunner(
            address,
            channel,
            agent_ref=spec.agent,
            trainer_address=settings.address_of("trainer"),
            api_key=caller_api_key or settings.api_key or "",
            forget_channel=lambda: self._forget(key),
        )

    def _forget(self, key: tuple[str, bool]) -> None:
        channel = self._channels.pop(key, None)
        if channel is not None:
            asyncio.get_running_loop().create_task(channel.close())

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        await asyncio.gather(*(channel.close() for channel in channels), return_exceptions=True)


def _open_channel(address: str, use_tls: bool, settings: Settings) -> grpc.aio.Channel:
    options = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
    ]
    if not use_tls:
        return grpc.aio.insecure_channel(address, options=options)
    ca_file = settings.tls.ca_file
    root = ca_file.read_bytes() if ca_file is not None else None  # system roots when unset
    return grpc.aio.secure_channel(
        address, grpc.ssl_channel_credentials(root_certificates=root), options=options
    )


# --- helpers -----------------------------------------------------------------------------------------


def _bare_trajectory(rollout: Rollout) -> trajectory_pb2.Trajectory:
    t = trajectory_pb2.Trajectory(
        trajectory_id=rollout.trajectory_id,
        task=rollout.task.text,
        agent=rollout.agent,
        job_id=rollout.job_id,
        group_id=rollout.group_id,
        iteration=rollout.iteration,
        query_id=rollout.query.query_id,
        policy=rollout.policy,
    )
    t.labels.update(rollout.labels)
    return t


def _end(t: trajectory_pb2.Trajectory, reason: int, detail: str, *, success: bool = False) -> None:
    end = utc_now()
    if not t.HasField("start_time"):
        t.start_time.FromDatetime(end)
    t.end_time.FromDatetime(end)
    t.success = success
    t.execution_time_seconds = max(0.0, (end - t.start_time.ToDatetime(end.tzinfo)).total_seconds())
    t.termination_reason = reason
    t.termination_detail = detail


__all__ = [
    "GrpcRunner",
    "MalformedEvent",
    "PythonRunner",
    "RecorderRecording",
    "Rollout",
    "RolloutRecording",
    "Runner",
    "RuntimeResolver",
    "StreamRecording",
    "authorize_python_entry_point",
    "load_entry_point",
    "python_entry_point_allowed",
    "task_from_query",
]
