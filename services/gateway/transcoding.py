"""grpc-gateway-compatible REST, built from the `google.api.http` annotations of the cohort.api protos.

At start-up every generated `cohort.api.*._pb2` module is imported and each RPC's `HttpRule`
(including `additional_bindings`) becomes a `Route`: a verb, a compiled path template, the body
field, and the method's request and response classes. A request is matched to a route, its message
is built (body, then path variables, then query parameters for fields bound by neither, as
grpc-gateway does) and the RPC is called through a generic callable on the backend's channel, so an
annotated RPC added to a proto needs no gateway code. Services implemented by users rather than by
Cohort (an agent runtime, a custom reward function) are not routed.

Streaming follows grpc-gateway: a server stream is newline-delimited `{"result": ...}` objects, each
flushed as it arrives, ending with `{"error": <Status>}` when the stream fails after it started (a
failure before the first message is an ordinary error response with its HTTP status). A
client-streaming RPC takes its request messages as a JSON array, or as NDJSON (one object per line).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import pkgutil
import re
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import grpc
import grpc.aio
from aiohttp import web
from google.api import annotations_pb2, http_pb2
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, MethodDescriptor
from google.protobuf.message import Message
from google.rpc import code_pb2

import cohort.api
from cohort.platform import tracing
from cohort.platform.config import Settings, TracingExporter
from cohort.platform.rpc import tls
from cohort.platform.rpc.client import channel_options
from cohort.platform.rpc.interceptors import AUTHORIZATION_KEY, REQUEST_ID_KEY, TENANT_KEY
from cohort.services.gateway import json_codec
from cohort.services.gateway.coalescing import CoalescedRead
from cohort.services.gateway.errors import (
    GatewayError,
    invalid_argument,
    make_status,
    request_id_of,
    status_of_rpc_error,
    status_to_json,
)

log = logging.getLogger(__name__)

USER_IMPLEMENTED_SERVICES = frozenset(
    {"cohort.api.agentruntime.v1.AgentRuntimeService", "cohort.api.reward.v1.RewardFunctionService"}
)
"""Contracts that agents and custom reward functions implement; Cohort serves no such service."""

COMPONENT_OVERRIDES = {"cohort.api.identity.v1.ApiKeyService": "jobs"}
"""Services served by a component other than the one their package is named after."""

STREAM_TIMEOUT_SECONDS = 24 * 3600.0
"""Deadline of a server stream when the caller sets none (a `WatchJob` may follow a long job)."""

HTTP_METHODS = ("get", "put", "post", "delete", "patch")


def component_of(service_full_name: str) -> str | None:
    """The Cohort component serving `cohort.api.<area>.v1.<Service>` (None for user contracts)."""
    if service_full_name in USER_IMPLEMENTED_SERVICES:
        return None
    if service_full_name in COMPONENT_OVERRIDES:
        return COMPONENT_OVERRIDES[service_full_name]
    parts = service_full_name.split(".")
    return parts[2] if len(parts) >= 4 and parts[:2] == ["cohort", "api"] else None


# --- path templates


@dataclass(frozen=True)
class PathTemplate:
    """A compiled `google.api.http` path template: `/v1/jobs/{job_id}:watch`, `/v1/{name=things/*}`."""

    template: str
    regex: re.Pattern[str]
    variables: tuple[str, ...]
    """Field paths bound by the template, in order."""
    verb: str
    literal_count: int

    def match(self, raw_path: str) -> dict[str, str] | None:
        matched = self.regex.fullmatch(raw_path)
        if matched is None:
            return None
        return {path: unquote(matched.group(f"v{i}")) for i, path in enumerate(self.variables)}

    @property
    def openapi_path(self) -> str:
        """The template with each variable as `{field.path}` (OpenAPI path parameters)."""
        return _VARIABLE.sub(lambda m: "{" + m.group(1) + "}", self.template)


_VARIABLE = re.compile(r"\{([A-Za-z0-9_.]+)(?:=[^}]*)?\}")


def _split_verb(template: str) -> tuple[str, str]:
    depth, last_slash, colon = 0, -1, -1
    for i, char in enumerate(template):
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
        elif depth == 0 and char == "/":
            last_slash, colon = i, -1
        elif depth == 0 and char == ":" and i > last_slash:
            colon = i
    if colon < 0:
        return template, ""
    return template[:colon], template[colon + 1 :]


def _segment_pattern(segment: str) -> tuple[str, int]:
    if segment == "*":
        return "[^/]+", 0
    if segment == "**":
        return ".+", 0
    return re.escape(segment), 1


def compile_template(template: str) -> PathTemplate:
    if not template.startswith("/"):
        raise ValueError(f"path template {template!r} does not start with '/'")
    path, verb = _split_verb(template)
    pieces: list[str] = []
    variables: list[str] = []
    literals = 0
    for token in re.split(r"/(?![^{]*\})", path[1:]):
        variable = re.fullmatch(r"\{([A-Za-z0-9_.]+)(?:=(.*))?\}", token)
        if variable is None:
            pattern, literal = _segment_pattern(token)
            pieces.append(pattern)
            literals += literal
            continue
        name, sub_template = variable.group(1), variable.group(2)
        if sub_template is None:
            inner = "[^/]+"
        else:
            inner_pieces = []
            for sub in sub_template.split("/"):
                pattern, literal = _segment_pattern(sub)
                inner_pieces.append(pattern)
                literals += literal
            inner = "/".join(inner_pieces)
        pieces.append(f"(?P<v{len(variables)}>{inner})")
        variables.append(name)
    regex = "/" + "/".join(pieces) + (":" + re.escape(verb) if verb else "")
    return PathTemplate(template, re.compile(regex), tuple(variables), verb, literals)


# --- routes


@dataclass(frozen=True)
class Route:
    http_method: str  # upper case
    template: PathTemplate
    body: str
    """`*`, a top-level field name, or empty (no body)."""
    service: str
    method: MethodDescriptor
    component: str
    request_class: type[Message]
    response_class: type[Message]

    @property
    def grpc_path(self) -> str:
        return f"/{self.service}/{self.method.name}"

    @property
    def client_streaming(self) -> bool:
        return self.method.client_streaming

    @property
    def server_streaming(self) -> bool:
        return self.method.server_streaming

    @property
    def request_descriptor(self) -> Descriptor:
        return self.method.input_type


def _rule_bindings(rule: http_pb2.HttpRule) -> Iterator[tuple[str, str, str]]:
    pattern = rule.WhichOneof("pattern")
    if pattern == "custom":
        yield rule.custom.kind.upper(), rule.custom.path, rule.body
    elif pattern in HTTP_METHODS:
        yield pattern.upper(), getattr(rule, pattern), rule.body
    for additional in rule.additional_bindings:
        yield from _rule_bindings(additional)


def api_modules() -> list[Any]:
    """Every generated `cohort.api.*_pb2` module, imported."""
    modules = []
    for info in pkgutil.walk_packages(cohort.api.__path__, "cohort.api."):
        if info.name.endswith("_pb2"):
            modules.append(importlib.import_module(info.name))
    return modules


def build_routes(modules: Iterable[Any] | None = None) -> list[Route]:
    """The route table of every annotated RPC of a Cohort-served service, most specific first."""
    routes: list[Route] = []
    for module in api_modules() if modules is None else modules:
        for service in module.DESCRIPTOR.services_by_name.values():
            component = component_of(service.full_name)
            if component is None:
                continue
            for method in service.methods:
                options = method.GetOptions()
                if not options.HasExtension(annotations_pb2.http):
                    continue
                for verb, path, body in _rule_bindings(options.Extensions[annotations_pb2.http]):
                    routes.append(
                        Route(
                            http_method=verb,
                            template=compile_template(path),
                            body=body,
                            service=service.full_name,
                            method=method,
                            component=component,
                            request_class=message_factory.GetMessageClass(method.input_type),
                            response_class=message_factory.GetMessageClass(method.output_type),
                        )
                    )
    # Custom verbs and literal segments first: `/v1/jobs/{id}:watch` before `/v1/jobs/{id}`.
    routes.sort(key=lambda r: (not r.template.verb, -r.template.literal_count, -len(r.template.template)))
    return routes


def read_paths(routes: Iterable[Route]) -> frozenset[str]:
    """gRPC paths of the unary RPCs bound to HTTP GET: side-effect free by the API conventions."""
    return frozenset(
        route.grpc_path
        for route in routes
        if route.http_method == "GET" and not (route.client_streaming or route.server_streaming)
    )


class RouteTable:
    def __init__(self, routes: list[Route]) -> None:
        self.routes = routes

    def resolve(self, http_method: str, raw_path: str) -> tuple[Route, dict[str, str]]:
        """The route for a request, with its path variables; 404 or 405 (with `allow`) otherwise."""
        allowed: set[str] = set()
        for route in self.routes:
            variables = route.template.match(raw_path)
            if variables is None:
                continue
            if route.http_method == http_method:
                return route, variables
            allowed.add(route.http_method)
        if allowed:
            error = GatewayError(
                make_status(code_pb2.UNIMPLEMENTED, f"{http_method} is not allowed on {raw_path[:200]}"),
                405,
            )
            error.allow = ", ".join(sorted(allowed))  # type: ignore[attr-defined]
            raise error
        raise GatewayError(make_status(code_pb2.NOT_FOUND, f"no route for {http_method} {raw_path[:200]}"))


# --- calling the backends


_GRPC_TIMEOUT = re.compile(r"(\d{1,8})([HMSmun])")
_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


def forwarded_metadata(headers: Any) -> tuple[tuple[str, str], ...]:
    """The caller's credentials, request id and tenant as gRPC metadata (never the gateway's own key)."""
    metadata = []
    for header, key in (
        ("Authorization", AUTHORIZATION_KEY),
        ("X-Request-Id", REQUEST_ID_KEY),
        ("Cohort-Tenant", TENANT_KEY),
    ):
        value = headers.get(header)
        if value is None:
            continue
        value = value.strip()
        if not (value.isascii() and value.isprintable()):
            raise invalid_argument(header, "header value must be printable ASCII")
        if value:
            metadata.append((key, value))
    return tuple(metadata)


def timeout_from(headers: Any, default: float | None) -> float | None:
    """`Grpc-Timeout: 1500m` (grpc-gateway's header) or the default."""
    raw = headers.get("Grpc-Timeout")
    if raw is None:
        return default
    matched = _GRPC_TIMEOUT.fullmatch(raw.strip())
    if matched is None:
        raise invalid_argument("Grpc-Timeout", "must be digits and a unit (H, M, S, m, u, n), e.g. 1500m")
    return int(matched.group(1)) * _TIMEOUT_UNITS[matched.group(2)]


@dataclass
class Backends:
    """Generic callables on channels to the Cohort services.

    The channels are the gateway's own: built from the process settings but without its API key,
    so a call carries the HTTP caller's `Authorization` or none (then the backend answers 401).
    They carry no client interceptors but tracing (when it is on): every call sets its deadline and
    metadata itself, and grpc.aio interceptors cost more CPU per call than the rest of the gateway.
    Calls of the RPCs in `reads` are coalesced (`CoalescedRead`).
    """

    settings_source: Any
    """A callable returning the current settings (addresses are known only after every port is bound)."""
    reads: frozenset[str] = field(default_factory=lambda: read_paths(build_routes()))
    _channels: dict[str, grpc.aio.Channel] = field(default_factory=dict)
    _callables: dict[tuple[str, str], Any] = field(default_factory=dict)

    def channel(self, component: str) -> grpc.aio.Channel:
        channel = self._channels.get(component)
        if channel is None:
            channel = self._channels[component] = self._open(component)
        return channel

    def _open(self, component: str) -> grpc.aio.Channel:
        settings: Settings = self.settings_source()
        options = channel_options(settings)  # the same limits, keepalive and TLS name as every channel
        interceptors = tracing.client_interceptors() if settings.tracing is not TracingExporter.NONE else None
        target = settings.address_of(component)
        credentials = tls.channel_credentials(settings.tls)
        if credentials is None:
            return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
        return grpc.aio.secure_channel(target, credentials, options=options, interceptors=interceptors)

    def callable_for(
        self, component: str, path: str, request_class: type[Message], response_class: type[Message],
        client_streaming: bool, server_streaming: bool,
    ) -> Any:  # fmt: skip
        key = (component, path)
        found = self._callables.get(key)
        if found is None:
            channel = self.channel(component)
            kind = {
                (False, False): channel.unary_unary,
                (False, True): channel.unary_stream,
                (True, False): channel.stream_unary,
                (True, True): channel.stream_stream,
            }[(client_streaming, server_streaming)]
            # `_registered_method`, as generated stubs pass it: the channel registers the method once,
            # so gRPC core does not intern the path on every call.
            found = self._callables[key] = kind(
                path,
                request_serializer=request_class.SerializeToString,
                response_deserializer=response_class.FromString,
                _registered_method=True,
            )
            if path in self.reads and not (client_streaming or server_streaming):
                found = self._callables[key] = CoalescedRead(found)
        return found

    def for_route(self, route: Route) -> Any:
        return self.callable_for(
            route.component,
            route.grpc_path,
            route.request_class,
            route.response_class,
            route.client_streaming,
            route.server_streaming,
        )

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        self._callables.clear()
        await asyncio.gather(*(channel.close() for channel in channels))


# --- HTTP handling


def json_response(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        text=json_codec.dumps(value), status=status, content_type="application/json", headers=headers
    )


def error_response(error: GatewayError, headers: dict[str, str] | None = None) -> web.Response:
    headers = dict(headers or {})
    allow = getattr(error, "allow", None)
    if allow:
        headers["Allow"] = allow
    return json_response(status_to_json(error.status), error.http_status, headers)


async def read_body(request: web.Request, limit: int) -> bytes:
    """The request body, or a 413 when it is larger than `limit` bytes."""
    if request.content_length is not None and request.content_length > limit:
        raise body_too_large(limit)
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise body_too_large(limit) from None


def body_too_large(limit: int) -> GatewayError:
    status = make_status(
        code_pb2.RESOURCE_EXHAUSTED,
        f"the request body is larger than the gateway's limit of {limit} bytes",
        reason="BODY_TOO_LARGE",
    )
    return GatewayError(status, 413)


def _query_parameters(request: web.Request, bound: set[str]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for key, value in request.rel_url.query.items():
        if _is_bound(key, bound):
            continue
        grouped.setdefault(key, []).append(value)
    return grouped


def _is_bound(key: str, bound: set[str]) -> bool:
    return any(key == b or key.startswith(b + ".") for b in bound)


def _json_names(route: Route, path: str) -> set[str]:
    """`path` in both spellings (proto and JSON name of its first part), to match query keys."""
    first, _, rest = path.partition(".")
    names = {path}
    field_ = json_codec.find_field(route.request_descriptor, first)
    if field_ is not None:
        names |= {
            ".".join(p for p in (field_.name, rest) if p),
            ".".join(p for p in (field_.json_name, rest) if p),
        }
    return names


class Transcoder:
    """Serves every route of the table over `Backends`."""

    def __init__(self, table: RouteTable, backends: Backends, settings_source: Any) -> None:
        self.table = table
        self.backends = backends
        self._settings = settings_source

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            route, variables = self.table.resolve(request.method, request.rel_url.raw_path)
            metadata = forwarded_metadata(request.headers)
            settings: Settings = self._settings()
            if route.client_streaming:
                body = await read_body(request, settings.gateway_max_body_bytes)
                messages = self._stream_messages(route, body, variables)
                return await self._call(request, route, messages, metadata)
            message = route.request_class()
            if route.body:
                body = await read_body(request, settings.gateway_max_body_bytes)
                self._fill_body(route, message, body)
            for path, value in variables.items():
                json_codec.set_from_strings(message, path, [value], strict=True)
            if route.body != "*":
                bound = set()
                for path in (*variables, *((route.body,) if route.body else ())):
                    bound |= _json_names(route, path)
                for key, values in _query_parameters(request, bound).items():
                    json_codec.set_from_strings(message, key, values, strict=False)
            return await self._call(request, route, message, metadata)
        except GatewayError as error:
            return error_response(error)

    def _fill_body(self, route: Route, message: Message, body: bytes) -> None:
        value = _parse_json(body) if body.strip() else {}
        if route.body == "*":
            json_codec.parse_into(value, message)
            return
        field_ = json_codec.find_field(message.DESCRIPTOR, route.body)
        if field_ is None or field_.message_type is None or field_.is_repeated:
            # The annotations are checked at build time; a body field that is not a message is a proto bug.
            raise GatewayError(make_status(code_pb2.UNIMPLEMENTED, f"unsupported body field {route.body!r}"))
        json_codec.parse_into(value, getattr(message, field_.name), where=field_.name)

    def _stream_messages(self, route: Route, body: bytes, variables: dict[str, str]) -> list[Message]:
        """A client stream's requests: a JSON array of messages, or NDJSON (one message per line)."""
        try:
            whole = json_codec.loads(body) if body.strip() else []
            items = whole if isinstance(whole, list) else [whole]
        except json_codec.BadJson:
            items = []
            for number, line in enumerate(body.split(b"\n"), start=1):
                if not line.strip():
                    continue
                try:
                    items.append(json_codec.loads(line))
                except json_codec.BadJson as exc:
                    raise invalid_argument(f"line {number}", f"not JSON: {exc}") from None
        messages = []
        for index, item in enumerate(items):
            message = route.request_class()
            json_codec.parse_into(item, message, where=f"[{index}]")
            for path, value in variables.items():
                json_codec.set_from_strings(message, path, [value], strict=True)
            messages.append(message)
        return messages

    async def _call(
        self, request: web.Request, route: Route, message: Any, metadata: tuple[tuple[str, str], ...]
    ) -> web.StreamResponse:
        callable_ = self.backends.for_route(route)
        settings: Settings = self._settings()
        if route.server_streaming:
            timeout = timeout_from(request.headers, STREAM_TIMEOUT_SECONDS)
            requests = iter(message) if route.client_streaming else message
            return await stream_response(
                request, callable_(requests, metadata=metadata, timeout=timeout), route
            )
        timeout = timeout_from(request.headers, settings.rpc_timeout_seconds)
        call = callable_(
            iter(message) if route.client_streaming else message, metadata=metadata, timeout=timeout
        )
        try:
            response = await call
        except grpc.aio.AioRpcError as exc:
            return rpc_error_response(exc, route.component)
        headers = {}
        request_id = _trailing_request_id(await call.trailing_metadata())
        if request_id:
            headers["X-Request-Id"] = request_id
        return web.Response(
            text=json_codec.message_json_text(response), content_type="application/json", headers=headers
        )


def _parse_json(body: bytes) -> Any:
    try:
        return json_codec.loads(body)
    except json_codec.BadJson as exc:
        raise invalid_argument("body", f"not valid JSON: {exc}") from None


def _trailing_request_id(trailing: Any) -> str | None:
    for key, value in trailing or ():
        if key == REQUEST_ID_KEY:
            return value if isinstance(value, str) else value.decode("ascii", "replace")
    return None


def rpc_error_response(exc: grpc.aio.AioRpcError, component: str) -> web.Response:
    status = status_of_rpc_error(exc, component)
    request_id = request_id_of(exc)
    return error_response(GatewayError(status), {"X-Request-Id": request_id} if request_id else None)


def _line(value: Any) -> bytes:
    return (json_codec.dumps(value) + "\n").encode("utf-8")


async def stream_response(request: web.Request, call: Any, route: Route) -> web.StreamResponse:
    """Relays a server stream as NDJSON, one flushed line per message."""
    iterator: AsyncIterator[Message] = call.__aiter__()
    try:
        try:
            first: Message | None = await iterator.__anext__()
        except StopAsyncIteration:
            first = None
        except grpc.aio.AioRpcError as exc:
            return rpc_error_response(exc, route.component)
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            if first is not None:
                await response.write(_line({"result": json_codec.message_to_json(first)}))
                async for message in iterator:
                    await response.write(_line({"result": json_codec.message_to_json(message)}))
        except grpc.aio.AioRpcError as exc:
            try:
                error = status_to_json(status_of_rpc_error(exc, route.component))
                await response.write(_line({"error": error}))
            except ConnectionError:
                return response
        except ConnectionError:
            return response  # the client went away; `finally` cancels the backend stream
        await response.write_eof()
        return response
    finally:
        call.cancel()  # a no-op once the stream has ended; stops the backend when the client left
