"""Reward functions by name: the built-in terms, Python entry points and remote services.

Built-ins (`outcome`, `tool_usage`, `verification`, `length_penalty`) are available to every tenant
and can also be named in `RewardSpec.custom_functions` to pass parameters (`params_json`), for
example `{"pattern": "run_tests|verify"}` for `verification`.

Custom functions are registered per tenant by `RegisterRewardFunction`:
- Python: `module:function` (or `module:object.attribute`), imported into the reward process. It is
  called with the `Trajectory` proto, plus the parameters dict when it accepts a second argument; it
  may be sync (run on a worker thread) or async; it returns a float or `(float, detail)`. Importing
  code into the service is an administrator's decision, so registering one needs an admin key.
- Remote: a `RewardFunctionService` at `host:port`, any language, called with one trajectory.

A custom function that raises, times out (`call_timeout_seconds`), returns a non-finite or
non-numeric value, or cannot be reached fails the score of that trajectory with a reason
(`RewardFunctionFailed`); the caller keeps the other trajectories.

The registry is process memory: registrations last as long as the reward process. (Durable
registrations need a table and a migration slot, which the reward service does not have yet.)
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import math
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import Enum
from typing import Any

import grpc
import grpc.aio

from cohort.api.reward.v1 import reward_function_pb2, reward_function_pb2_grpc
from cohort.api.trajectory.v1 import trajectory_pb2 as tpb
from cohort.errors import AlreadyExists, CohortError, InvalidArgument, NotFound, PermissionDenied
from cohort.paging import check_page_size, decode_page_token, encode_page_token
from cohort.services.reward import scoring

DEFAULT_CALL_TIMEOUT_SECONDS = 10.0
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_.\-]{0,62}")
ENTRY_POINT_PATTERN = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")
ADDRESS_PATTERN = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+):[0-9]{1,5}")
DESCRIPTION_LIMIT = 1000
IDEMPOTENCY_MEMORY = 10_000


class FunctionKind(Enum):
    BUILTIN = "builtin"
    PYTHON = "python"
    REMOTE = "remote"


class RewardFunctionFailed(CohortError):
    """A custom reward function failed on one trajectory; its status goes into that trajectory's score."""

    def __init__(self, message: str, *, reason: str, code: grpc.StatusCode, function: str) -> None:
        super().__init__(message, reason=reason, metadata={"function": function})
        self.status_code = code


@dataclass(frozen=True)
class FunctionResult:
    """What a reward function returned for one trajectory: the value and an optional breakdown."""

    value: float
    detail: str = ""
    components: tuple[tpb.RewardComponent, ...] = ()


@dataclass(frozen=True)
class RewardFunction:
    name: str
    kind: FunctionKind
    entry_point: str = ""
    address: str = ""
    description: str = ""
    create_time: datetime | None = None

    def same_definition(self, other: RewardFunction) -> bool:
        return (self.kind, self.entry_point, self.address, self.description) == (
            other.kind,
            other.entry_point,
            other.address,
            other.description,
        )


# --- built-ins


@dataclass(frozen=True)
class Builtin:
    function: RewardFunction
    compute: Callable[[scoring.TrajectoryFacts, dict[str, Any]], tuple[float, str]]
    params: dict[str, type | tuple[type, ...]] = field(default_factory=dict)
    """Accepted parameters and their JSON types."""


_NUMBER = (int, float)

BUILTINS: dict[str, Builtin] = {
    b.function.name: b
    for b in (
        Builtin(
            RewardFunction(
                "outcome",
                FunctionKind.BUILTIN,
                description="1 for success, 0 for failure, or the runtime's reported score in [0, 1]",
            ),
            lambda t, p: scoring.outcome_term(t),
        ),
        Builtin(
            RewardFunction(
                "tool_usage",
                FunctionKind.BUILTIN,
                description="(useful_reward*useful - failure_cost*failed - invalid_cost*invalid) / "
                "tool calls; params failure_cost (1), invalid_cost (1), useful_reward (0)",
            ),
            lambda t, p: scoring.tool_usage_term(t, **p),
            {"failure_cost": _NUMBER, "invalid_cost": _NUMBER, "useful_reward": _NUMBER},
        ),
        Builtin(
            RewardFunction(
                "verification",
                FunctionKind.BUILTIN,
                description="1 when a step before the last calls a tool whose name matches `pattern` "
                f"(default {scoring.DEFAULT_VERIFICATION_PATTERN!r}) and it did not fail; params pattern, "
                "require_success (true)",
            ),
            lambda t, p: scoring.verification_term(t, **p),
            {"pattern": str, "require_success": bool},
        ),
        Builtin(
            RewardFunction(
                "length_penalty",
                FunctionKind.BUILTIN,
                description="-min(1, extra steps / step_budget) - min(1, extra tokens / token_budget); "
                "params step_budget, token_budget (0 = none)",
            ),
            lambda t, p: scoring.length_penalty_term(t, **p),
            {"step_budget": int, "token_budget": int},
        ),
    )
}


def parse_params(name: str, params_json: str, field_name: str) -> dict[str, Any]:
    """The parameters of a function as a dict, checked against a built-in's accepted parameters."""
    if not params_json:
        params: dict[str, Any] = {}
    else:
        try:
            params = json.loads(params_json)
        except ValueError as exc:
            raise InvalidArgument(field_name, f"is not valid JSON: {exc}") from None
        if not isinstance(params, dict):
            raise InvalidArgument(field_name, "must be a JSON object")
    builtin = BUILTINS.get(name)
    if builtin is None:
        return params
    for key, value in params.items():
        expected = builtin.params.get(key)
        if expected is None:
            accepted = ", ".join(builtin.params) or "none"
            raise InvalidArgument(field_name, f"{name} takes no parameter {key!r} (accepted: {accepted})")
        if isinstance(value, bool) and expected is not bool or not isinstance(value, expected):
            raise InvalidArgument(field_name, f"{key} has the wrong type")
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value) or value < 0:
                raise InvalidArgument(field_name, f"{key} must be a finite number >= 0")
    if "pattern" in params:
        try:
            params["pattern"] = re.compile(params["pattern"], re.IGNORECASE)
        except re.error as exc:
            raise InvalidArgument(field_name, f"pattern is not a valid regular expression: {exc}") from None
    return params


# --- calling functions


def _load_entry_point(entry_point: str, field_name: str) -> Callable[..., Any]:
    module_name, _, attribute_path = entry_point.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for attribute in attribute_path.split("."):
            target = getattr(target, attribute)
    except Exception as exc:  # noqa: BLE001 - any import failure is the registrant's to see
        message = f"cannot load {entry_point!r}: {type(exc).__name__}: {exc}"
        raise InvalidArgument(field_name, message) from None
    if not callable(target):
        raise InvalidArgument(field_name, f"{entry_point!r} is not callable")
    return target


def _accepts_params(function: Callable[..., Any]) -> bool:
    try:
        parameters = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = [
        p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    ]
    return len(positional) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in positional)


@dataclass(frozen=True)
class _PythonFunction:
    function: Callable[..., Any]
    is_async: bool
    takes_params: bool


def _result_of(name: str, returned: Any) -> FunctionResult:
    detail = ""
    if isinstance(returned, tuple) and len(returned) == 2 and isinstance(returned[1], str):
        returned, detail = returned
    if isinstance(returned, bool) or not isinstance(returned, int | float):
        raise RewardFunctionFailed(
            f"reward function {name!r} returned {type(returned).__name__}, not a number",
            reason="REWARD_FUNCTION_BAD_VALUE",
            code=grpc.StatusCode.FAILED_PRECONDITION,
            function=name,
        )
    value = float(returned)
    if not math.isfinite(value):
        raise RewardFunctionFailed(
            f"reward function {name!r} returned a non-finite value ({value})",
            reason="REWARD_FUNCTION_NON_FINITE",
            code=grpc.StatusCode.FAILED_PRECONDITION,
            function=name,
        )
    return FunctionResult(value, detail)


def _timed_out(name: str, seconds: float) -> RewardFunctionFailed:
    return RewardFunctionFailed(
        f"reward function {name!r} did not answer within {seconds:g} s",
        reason="REWARD_FUNCTION_TIMEOUT",
        code=grpc.StatusCode.DEADLINE_EXCEEDED,
        function=name,
    )


def _raised(name: str, exc: BaseException) -> RewardFunctionFailed:
    return RewardFunctionFailed(
        f"reward function {name!r} raised {type(exc).__name__}: {exc}"[:1000],
        reason="REWARD_FUNCTION_RAISED",
        code=grpc.StatusCode.ABORTED,
        function=name,
    )


class RewardFunctionRegistry:
    """Registered functions per tenant, with the built-ins beside them, and the means to call them."""

    def __init__(self, *, call_timeout_seconds: float = DEFAULT_CALL_TIMEOUT_SECONDS) -> None:
        self.call_timeout_seconds = call_timeout_seconds
        self._functions: dict[tuple[str, str], RewardFunction] = {}
        self._python: dict[str, _PythonFunction] = {}
        self._requests: dict[tuple[str, str], RewardFunction] = {}
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._lock = threading.Lock()

    # -- registration and listing

    def register(
        self, tenant_id: str, function: RewardFunction, *, request_id: str = "", is_admin: bool = False
    ) -> RewardFunction:
        if request_id and (tenant_id, request_id) in self._requests:
            return self._requests[(tenant_id, request_id)]
        self._check(function, is_admin)
        loaded = None
        if function.kind is FunctionKind.PYTHON:
            target = _load_entry_point(function.entry_point, "function.entry_point")
            is_async = inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(
                getattr(target, "__call__", None)  # noqa: B004 - an object whose __call__ is async
            )
            loaded = _PythonFunction(target, is_async, _accepts_params(target))
        with self._lock:
            existing = self._functions.get((tenant_id, function.name))
            if existing is not None:
                if not existing.same_definition(function):
                    raise AlreadyExists(
                        f"reward function {function.name!r} is already registered with another definition"
                    )
                registered = existing
            else:
                registered = replace(function, create_time=datetime.now(UTC))
                self._functions[(tenant_id, function.name)] = registered
                if loaded is not None:
                    self._python[function.entry_point] = loaded
            if request_id:
                if len(self._requests) >= IDEMPOTENCY_MEMORY:
                    self._requests.pop(next(iter(self._requests)))
                self._requests[(tenant_id, request_id)] = registered
        return registered

    @staticmethod
    def _check(function: RewardFunction, is_admin: bool) -> None:
        if not function.name:
            raise InvalidArgument("function.name", "is required")
        if not NAME_PATTERN.fullmatch(function.name):
            raise InvalidArgument(
                "function.name", "must be 1-63 characters: lowercase letters, digits, '_', '.', '-'"
            )
        if function.name in BUILTINS:
            raise AlreadyExists(f"{function.name!r} is a built-in reward function")
        if len(function.description) > DESCRIPTION_LIMIT:
            raise InvalidArgument("function.description", f"is longer than {DESCRIPTION_LIMIT} characters")
        if function.kind is FunctionKind.PYTHON:
            if function.address:
                raise InvalidArgument("function.address", "is for remote functions, not Python ones")
            if not ENTRY_POINT_PATTERN.fullmatch(function.entry_point):
                raise InvalidArgument("function.entry_point", "must be 'module:function'")
            if not is_admin:
                raise PermissionDenied("registering a Python reward function needs an admin API key")
        elif function.kind is FunctionKind.REMOTE:
            if function.entry_point:
                raise InvalidArgument("function.entry_point", "is for Python functions, not remote ones")
            if (
                not ADDRESS_PATTERN.fullmatch(function.address)
                or not 0 < int(function.address.rsplit(":", 1)[1]) < 65536
            ):
                raise InvalidArgument("function.address", "must be 'host:port'")
        else:
            raise InvalidArgument("function.kind", "must be REWARD_FUNCTION_KIND_PYTHON or _REMOTE")

    def get(self, tenant_id: str, name: str) -> RewardFunction:
        builtin = BUILTINS.get(name)
        if builtin is not None:
            return builtin.function
        function = self._functions.get((tenant_id, name))
        if function is None:
            raise NotFound(f"no reward function named {name!r}", metadata={"name": name})
        return function

    def list(self, tenant_id: str, page_size: int, page_token: str) -> tuple[list[RewardFunction], str]:
        """Built-ins first, then the tenant's functions, each by name."""
        check_page_size(page_size)
        scope = {"list": "reward_functions", "tenant": tenant_id}
        position = decode_page_token(page_token, scope)
        everything = [(0, name, b.function) for name, b in sorted(BUILTINS.items())] + sorted(
            (1, name, f) for (tenant, name), f in list(self._functions.items()) if tenant == tenant_id
        )
        if position is not None:
            after = (position[0], position[1])
            everything = [entry for entry in everything if (entry[0], entry[1]) > after]
        page = everything[:page_size]
        next_token = ""
        if len(everything) > page_size:
            last = page[-1]
            next_token = encode_page_token(scope, [last[0], last[1]])
        return [entry[2] for entry in page], next_token

    # -- calling

    async def call(
        self,
        function: RewardFunction,
        trajectories: Sequence[tpb.Trajectory],
        params: dict[str, Any],
        params_json: str,
    ) -> list[FunctionResult | RewardFunctionFailed]:
        """`function` on each trajectory, concurrently; a failure is returned in place of its result."""
        if function.kind is FunctionKind.BUILTIN:
            compute = BUILTINS[function.name].compute
            return [FunctionResult(*compute(t, params)) for t in trajectories]
        if function.kind is FunctionKind.PYTHON:
            python = self._python[function.entry_point]
            calls = [self._call_python(function.name, python, t, params) for t in trajectories]
        else:
            stub = reward_function_pb2_grpc.RewardFunctionServiceStub(self._channel(function.address))
            calls = [self._call_remote(function, stub, t, params_json) for t in trajectories]
        return list(await asyncio.gather(*calls))

    async def _call_python(
        self, name: str, python: _PythonFunction, trajectory: tpb.Trajectory, params: dict[str, Any]
    ) -> FunctionResult | RewardFunctionFailed:
        args = (trajectory, params) if python.takes_params else (trajectory,)
        try:
            if python.is_async:
                returned = await asyncio.wait_for(python.function(*args), self.call_timeout_seconds)
            else:
                returned = await asyncio.wait_for(
                    asyncio.to_thread(python.function, *args), self.call_timeout_seconds
                )
            return _result_of(name, returned)
        except TimeoutError:
            return _timed_out(name, self.call_timeout_seconds)
        except RewardFunctionFailed as failure:
            return failure
        except Exception as exc:  # noqa: BLE001 - user code: any exception fails this trajectory only
            return _raised(name, exc)

    async def _call_remote(
        self,
        function: RewardFunction,
        stub: reward_function_pb2_grpc.RewardFunctionServiceStub,
        trajectory: tpb.Trajectory,
        params_json: str,
    ) -> FunctionResult | RewardFunctionFailed:
        request = reward_function_pb2.ScoreRequest(
            function_name=function.name, trajectory=trajectory, params_json=params_json
        )
        try:
            response = await stub.Score(request, timeout=self.call_timeout_seconds)
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                return _timed_out(function.name, self.call_timeout_seconds)
            if code == grpc.StatusCode.UNAVAILABLE:
                return RewardFunctionFailed(
                    f"reward function {function.name!r} at {function.address} is unreachable: "
                    f"{exc.details()}",
                    reason="REWARD_FUNCTION_UNREACHABLE",
                    code=grpc.StatusCode.UNAVAILABLE,
                    function=function.name,
                )
            return RewardFunctionFailed(
                f"reward function {function.name!r} at {function.address} failed: "
                f"{code.name} {exc.details()}"[:1000],
                reason="REWARD_FUNCTION_RAISED",
                code=grpc.StatusCode.ABORTED,
                function=function.name,
            )
        try:
            result = _result_of(function.name, response.reward)
        except RewardFunctionFailed as failure:
            return failure
        return FunctionResult(result.value, response.detail, tuple(response.components))

    def _channel(self, address: str) -> grpc.aio.Channel:
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = grpc.aio.insecure_channel(address)
        return channel

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        await asyncio.gather(*(channel.close() for channel in channels))
