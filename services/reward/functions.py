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

Registrations are stored (`store`, table `reward_functions`) and survive restarts; a reward process
caches the ones it has read, which is always safe: a registration never changes once made (the same
name with another definition is `ALREADY_EXISTS`). Another reward process finds a new one
in the database at its first use. A Python entry point is imported at registration (an import error
is the registrant's `INVALID_ARGUMENT`) and again in each process that first calls it; if it cannot
be imported there, the trajectories it scores fail with `REWARD_FUNCTION_UNAVAILABLE`.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import grpc
import grpc.aio

from cohort.api.reward.v1 import reward_function_pb2, reward_function_pb2_grpc
from cohort.api.reward.v1 import reward_pb2 as rpb
from cohort.api.trajectory.v1 import trajectory_pb2 as tpb
from cohort.platform.errors import (
    AlreadyExists,
    CohortError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from cohort.platform.paging import check_page_size, decode_page_token, encode_page_token
from cohort.platform.storage.engine import Database
from cohort.services.reward import terms
from cohort.services.reward.store import FunctionKind, RewardFunction, RewardFunctionStore

DEFAULT_CALL_TIMEOUT_SECONDS = 10.0
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_.\-]{0,62}")
ENTRY_POINT_PATTERN = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")
ADDRESS_PATTERN = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+):[0-9]{1,5}")
DESCRIPTION_LIMIT = 1000


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


_KIND_TO_PROTO = {
    FunctionKind.BUILTIN: rpb.REWARD_FUNCTION_KIND_BUILTIN,
    FunctionKind.PYTHON: rpb.REWARD_FUNCTION_KIND_PYTHON,
    FunctionKind.REMOTE: rpb.REWARD_FUNCTION_KIND_REMOTE,
}


_KIND_FROM_PROTO = {proto: kind for kind, proto in _KIND_TO_PROTO.items() if kind is not FunctionKind.BUILTIN}
"""The kinds a registration may have (the built-ins are not registered)."""


def function_from_proto(message: rpb.RewardFunction) -> RewardFunction:
    """A function to register; `InvalidArgument` for a kind that cannot be registered."""
    kind = _KIND_FROM_PROTO.get(message.kind)
    if kind is None:
        raise InvalidArgument("function.kind", "must be REWARD_FUNCTION_KIND_PYTHON or _REMOTE")
    return RewardFunction(
        name=message.name,
        kind=kind,
        entry_point=message.entry_point,
        address=message.address,
        description=message.description,
    )


def function_to_proto(function: RewardFunction) -> rpb.RewardFunction:
    message = rpb.RewardFunction(
        name=function.name,
        kind=_KIND_TO_PROTO[function.kind],
        entry_point=function.entry_point,
        address=function.address,
        description=function.description,
    )
    if isinstance(function.create_time, datetime):
        message.create_time.FromDatetime(function.create_time)
    return message


# --- built-ins


@dataclass(frozen=True)
class Builtin:
    function: RewardFunction
    compute: Callable[[terms.TrajectoryFacts, dict[str, Any]], tuple[float, str]]
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
            lambda t, p: terms.outcome_term(t),
        ),
        Builtin(
            RewardFunction(
                "tool_usage",
                FunctionKind.BUILTIN,
                description="(useful_reward*useful - failure_cost*failed - invalid_cost*invalid) / "
                "tool calls; params failure_cost (1), invalid_cost (1), useful_reward (0)",
            ),
            lambda t, p: terms.tool_usage_term(t, **p),
            {"failure_cost": _NUMBER, "invalid_cost": _NUMBER, "useful_reward": _NUMBER},
        ),
        Builtin(
            RewardFunction(
                "verification",
                FunctionKind.BUILTIN,
                description="1 when a step before the last calls a tool whose name matches `pattern` "
                f"(default {terms.DEFAULT_VERIFICATION_PATTERN!r}) and it did not fail; params pattern, "
                "require_success (true)",
            ),
            lambda t, p: terms.verification_term(t, **p),
            {"pattern": str, "require_success": bool},
        ),
        Builtin(
            RewardFunction(
                "length_penalty",
                FunctionKind.BUILTIN,
                description="-min(1, extra steps / step_budget) - min(1, extra tokens / token_budget); "
                "params step_budget, token_budget (0 = none)",
            ),
            lambda t, p: terms.length_penalty_term(t, **p),
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


REGISTER_SCOPE = "cohort.api.reward.v1.RewardService.RegisterRewardFunction"
ENTRY_POINT_LIMIT = 500
ADDRESS_LIMIT = 300


class RewardFunctionRegistry:
    """Registered functions per tenant, with the built-ins beside them, and the means to call them.

    `database` None: the built-ins only (a scorer with nothing registered); registering needs one.
    """

    def __init__(
        self, database: Database | None = None, *, call_timeout_seconds: float = DEFAULT_CALL_TIMEOUT_SECONDS
    ) -> None:
        self._store = RewardFunctionStore(database) if database is not None else None
        self.call_timeout_seconds = call_timeout_seconds
        self._functions: dict[tuple[str, str], RewardFunction] = {}
        self._python: dict[str, _PythonFunction] = {}
        self._channels: dict[str, grpc.aio.Channel] = {}

    # -- registration and listing

    async def register(
        self, tenant_id: str, request: rpb.RegisterRewardFunctionRequest, function: RewardFunction, *,
        is_admin: bool,
    ) -> rpb.RegisterRewardFunctionResponse:  # fmt: skip
        """Stores `function` (the definition `request` asks for); idempotent by `request.request_id`."""
        self._check(function, is_admin)
        if self._store is None:
            raise FailedPrecondition("this reward service has no database to register functions in")
        if function.kind is FunctionKind.PYTHON:
            self._python_function(function.entry_point, "function.entry_point")
        return await self._store.register(
            REGISTER_SCOPE,
            request,
            rpb.RegisterRewardFunctionResponse,
            lambda stored: rpb.RegisterRewardFunctionResponse(function=function_to_proto(stored)),
            tenant_id,
            function,
        )

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
            if len(function.entry_point) > ENTRY_POINT_LIMIT:
                raise InvalidArgument(
                    "function.entry_point", f"is longer than {ENTRY_POINT_LIMIT} characters"
                )
            if not ENTRY_POINT_PATTERN.fullmatch(function.entry_point):
                raise InvalidArgument("function.entry_point", "must be 'module:function'")
            if not is_admin:
                raise PermissionDenied("registering a Python reward function needs an admin API key")
        elif function.kind is FunctionKind.REMOTE:
            if function.entry_point:
                raise InvalidArgument("function.entry_point", "is for Python functions, not remote ones")
            if (
                len(function.address) > ADDRESS_LIMIT
                or not ADDRESS_PATTERN.fullmatch(function.address)
                or not 0 < int(function.address.rsplit(":", 1)[1]) < 65536
            ):
                raise InvalidArgument("function.address", "must be 'host:port'")
        else:
            raise InvalidArgument("function.kind", "must be REWARD_FUNCTION_KIND_PYTHON or _REMOTE")

    async def load(self, tenant_id: str, names: Sequence[str]) -> None:
        """Reads the tenant's registrations of `names` that this process has not read yet (one query)."""
        missing = sorted({n for n in names if n not in BUILTINS and (tenant_id, n) not in self._functions})
        if not missing or self._store is None:
            return
        for function in await self._store.find(tenant_id, missing):
            self._functions[(tenant_id, function.name)] = function

    def get(self, tenant_id: str, name: str) -> RewardFunction:
        """A built-in, or a registration read by `load`."""
        builtin = BUILTINS.get(name)
        if builtin is not None:
            return builtin.function
        function = self._functions.get((tenant_id, name))
        if function is None:
            raise NotFound(f"no reward function named {name!r}", metadata={"name": name})
        return function

    async def list(self, tenant_id: str, page_size: int, page_token: str) -> tuple[list[RewardFunction], str]:
        """Built-ins first, then the tenant's functions, each by name."""
        check_page_size(page_size)
        scope = {"list": "reward_functions", "tenant": tenant_id}
        position = decode_page_token(page_token, scope)
        after = (0, "") if position is None else (position[0], position[1])
        builtins = [(0, name, b.function) for name, b in sorted(BUILTINS.items()) if (0, name) > after]
        registered: list[tuple[int, str, RewardFunction]] = []
        if self._store is not None and len(builtins) <= page_size:
            after_name = after[1] if after[0] == 1 else None
            stored = await self._store.page(tenant_id, after_name, page_size + 1 - len(builtins))
            registered = [(1, function.name, function) for function in stored]
        everything = builtins + registered
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
            try:
                python = self._python_function(function.entry_point, "entry_point")
            except InvalidArgument as exc:
                failure = RewardFunctionFailed(
                    f"reward function {function.name!r} cannot be imported here: {exc.message}"[:1000],
                    reason="REWARD_FUNCTION_UNAVAILABLE",
                    code=grpc.StatusCode.FAILED_PRECONDITION,
                    function=function.name,
                )
                return [failure for _ in trajectories]
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

    def _python_function(self, entry_point: str, field_name: str) -> _PythonFunction:
        """The entry point, imported once per process; if it cannot be, `InvalidArgument` (`field_name`)."""
        loaded = self._python.get(entry_point)
        if loaded is None:
            target = _load_entry_point(entry_point, field_name)
            is_async = inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(
                getattr(target, "__call__", None)  # noqa: B004 - an object whose __call__ is async
            )
            loaded = self._python[entry_point] = _PythonFunction(target, is_async, _accepts_params(target))
        return loaded

    def _channel(self, address: str) -> grpc.aio.Channel:
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = grpc.aio.insecure_channel(address)
        return channel

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        await asyncio.gather(*(channel.close() for channel in channels))
