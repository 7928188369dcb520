"""Server interceptors: request id, authentication and the one place domain errors become statuses.

Every interceptor here is an `AroundInterceptor`: it supplies an async context manager that runs
around a method's behaviour, and `wrap_handler` applies it to all four kinds of RPC. Running inside
the behaviour (not in `intercept_service`) means a rejection or an error raised mid-stream is seen
by the interceptors outside it, so `start_server` orders them: tracing, request id, errors, auth,
and an authentication failure is mapped to a status by the same code as any domain error.

`start_server` does not hand them to grpc as interceptors (grpc would then run a chain of coroutines
per call just to find the handler): `intercept_handler` wraps each method's handler once, when it is
registered. For unary-response methods each interceptor's `wrap_unary` writes its `around` out as a
plain coroutine, which costs less per call than entering an async context manager.

Context variables are set without being reset: grpc.aio runs each RPC in its own task, whose context
copy is discarded when the RPC ends, so nothing leaks between calls.
"""

from __future__ import annotations

import inspect
import logging
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any, NoReturn

import grpc
import grpc.aio
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from cohort.platform.context import (
    DEFAULT_TENANT_ID,
    Authenticator,
    Identity,
    current_identity,
    current_request_id,
)
from cohort.platform.errors import (
    ERROR_DOMAIN,
    CohortError,
    InvalidArgument,
    PermissionDenied,
    Unauthenticated,
)
from cohort.platform.transient import is_transient

# The name from before the platform moved into cohort.platform: log filters and tests select on it.
logger = logging.getLogger("cohort.rpc.interceptors")

REQUEST_ID_KEY = "x-request-id"
AUTHORIZATION_KEY = "authorization"
TENANT_KEY = "cohort-tenant"
STATUS_DETAILS_KEY = "grpc-status-details-bin"

UNAUTHENTICATED_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)
"""Services a load balancer or grpcurl must reach without an API key."""

# A caller's request id ends up in logs and trailers, so only a short, plain token is trusted.
_ACCEPTABLE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

Around = Callable[[grpc.aio.ServicerContext], AbstractAsyncContextManager[Any]]
Unary = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]
"""The behaviour of a unary-response RPC (unary-unary or stream-unary) as a coroutine function."""


def wrap_handler(handler: grpc.RpcMethodHandler | None, around: Around) -> grpc.RpcMethodHandler | None:
    """The same handler with its behaviour run inside `around(context)`, for any of the four kinds."""
    if handler is None:
        return None
    codec = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.response_streaming:
        behavior = handler.stream_stream if handler.request_streaming else handler.unary_stream

        async def streaming(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async with around(context):
                responses = behavior(request, context)
                if inspect.isawaitable(responses):  # a coroutine that answers with context.write
                    await responses
                elif hasattr(responses, "__aiter__"):
                    async for response in responses:
                        yield response
                else:
                    for response in responses:
                        yield response

        if handler.request_streaming:
            return grpc.stream_stream_rpc_method_handler(streaming, **codec)
        return grpc.unary_stream_rpc_method_handler(streaming, **codec)

    behavior = handler.stream_unary if handler.request_streaming else handler.unary_unary

    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        async with around(context):
            response = behavior(request, context)
            return await response if inspect.isawaitable(response) else response

    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(unary, **codec)
    return grpc.unary_unary_rpc_method_handler(unary, **codec)


def _as_coroutine_function(behavior: Callable[[Any, grpc.aio.ServicerContext], Any]) -> Unary:
    """`behavior` as a coroutine function: itself, or a coroutine awaiting whatever it returns."""
    if inspect.iscoroutinefunction(behavior):
        return behavior

    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        response = behavior(request, context)
        return await response if inspect.isawaitable(response) else response

    return unary


def intercept_handler(
    handler: grpc.RpcMethodHandler | None, method: str, interceptors: Sequence[AroundInterceptor]
) -> grpc.RpcMethodHandler | None:
    """`handler` of `method` with the interceptors that apply to it around its behaviour, the first
    outermost: the same as installing them as server interceptors, done once instead of per call."""
    if handler is None:
        return None
    applicable = [interceptor for interceptor in interceptors if interceptor.applies_to(method)]
    if not applicable:
        return handler
    if handler.response_streaming:
        # All the `around`s in one wrapper: each streamed message then passes one generator, not one
        # per interceptor (a WatchJob change goes out to a thousand streams at once).
        arounds = [_bind_around(interceptor, method) for interceptor in applicable]
        return wrap_handler(handler, lambda context: _nested(arounds, context))
    streaming = handler.request_streaming
    behavior = _as_coroutine_function(handler.stream_unary if streaming else handler.unary_unary)
    for interceptor in reversed(applicable):
        behavior = interceptor.wrap_unary(method, behavior)
    factory = grpc.stream_unary_rpc_method_handler if streaming else grpc.unary_unary_rpc_method_handler
    return factory(
        behavior,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


@asynccontextmanager
async def _nested(arounds: Sequence[Around], context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
    """`arounds` entered in order, the first outermost, exactly as if written nested."""
    async with AsyncExitStack() as stack:
        for around in arounds:
            await stack.enter_async_context(around(context))
        yield


def _bind_around(interceptor: AroundInterceptor, method: str) -> Around:
    return lambda context: interceptor.around(method, context)


class AroundInterceptor(grpc.aio.ServerInterceptor):
    """Base of the server interceptors: runs `around(method, context)` around every RPC."""

    def applies_to(self, method: str) -> bool:
        return True

    def around(self, method: str, context: grpc.aio.ServicerContext) -> AbstractAsyncContextManager[Any]:
        raise NotImplementedError

    def wrap_unary(self, method: str, behavior: Unary) -> Unary:
        """`behavior` of a unary-response `method` run inside `around`. Subclasses override it with
        the same steps written out as a coroutine: cheaper per call than an async context manager."""
        around = self.around

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            async with around(method, context):
                return await behavior(request, context)

        return unary

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        return intercept_handler(handler, handler_call_details.method, [self])


def metadata_value(context: grpc.aio.ServicerContext, key: str) -> str | None:
    """The first value of an (ASCII) invocation metadata key, or None."""
    return _first_value(context.invocation_metadata(), key)


def _first_value(metadata: Any, key: str) -> str | None:
    for item_key, value in metadata or ():
        if item_key == key:
            return value.decode("ascii", "replace") if isinstance(value, bytes) else value
    return None


def new_request_id() -> str:
    """A fresh request id: 32 hex digits, laid out as `uuid.uuid4().hex` (version 4, RFC 4122
    variant), from the same source (`os.urandom`) without building a `UUID` object."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    return raw.hex()


def service_of(method: str) -> str:
    """`/pkg.Service/Method` → `pkg.Service`."""
    return method.lstrip("/").rpartition("/")[0]


class RequestIdInterceptor(AroundInterceptor):
    """Adopts the caller's `x-request-id` (or makes one) and returns it in the trailers."""

    @asynccontextmanager
    async def around(self, method: str, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        self.start(context)
        yield

    def wrap_unary(self, method: str, behavior: Unary) -> Unary:
        start = self.start

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            start(context)
            return await behavior(request, context)

        return unary

    @staticmethod
    def start(context: grpc.aio.ServicerContext) -> None:
        supplied = metadata_value(context, REQUEST_ID_KEY)
        if supplied is not None and _ACCEPTABLE_REQUEST_ID.fullmatch(supplied):
            request_id = supplied
        else:
            request_id = new_request_id()
        current_request_id.set(request_id)
        # Trailers rather than initial metadata: sending initial metadata early costs a write per
        # call and would stop a servicer from sending its own. Error statuses repeat it.
        context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))


TRUSTED_KEY_ID = "auth-disabled"


class AuthInterceptor(AroundInterceptor):
    """Requires `authorization: Bearer <api key>` and sets `current_identity` for the call.

    An admin key may act for a tenant named in `cohort-tenant`: that is how one service calls another
    on behalf of the tenant it is working for. Any other key may only name its own tenant.
    """

    def __init__(self, authenticator: Authenticator) -> None:
        self._authenticator = authenticator

    def applies_to(self, method: str) -> bool:
        return service_of(method) not in UNAUTHENTICATED_SERVICES

    @asynccontextmanager
    async def around(self, method: str, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        current_identity.set(await self.identify(context))
        yield

    def wrap_unary(self, method: str, behavior: Unary) -> Unary:
        identify = self.identify

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            current_identity.set(await identify(context))
            return await behavior(request, context)

        return unary

    async def identify(self, context: grpc.aio.ServicerContext) -> Identity:
        metadata = context.invocation_metadata()
        header = _first_value(metadata, AUTHORIZATION_KEY)
        if header is None:
            raise Unauthenticated(
                "this call needs an API key: send metadata 'authorization: Bearer <api key>'",
                reason="API_KEY_MISSING",
            )
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated(
                "malformed authorization metadata: send 'authorization: Bearer <api key>'",
                reason="AUTHORIZATION_MALFORMED",
            )
        identity = await self._authenticator.authenticate(token)
        tenant = (_first_value(metadata, TENANT_KEY) or "").strip()
        if not tenant or tenant == identity.tenant_id:
            return identity
        if not identity.is_admin:
            raise PermissionDenied(
                f"'{TENANT_KEY}' names a tenant this API key does not belong to; "
                "only an admin key may act for another tenant",
                reason="TENANT_MISMATCH",
            )
        return Identity(tenant_id=tenant, key_id=identity.key_id, is_admin=True)


class TrustedCallerInterceptor(AroundInterceptor):
    """With authentication switched off (`COHORT_AUTH_ENABLED=false`), every caller is trusted.

    Each call acts as an admin of the tenant named in `cohort-tenant` (default `default`), so
    tenant-scoped domain code works the same with and without keys.
    """

    @asynccontextmanager
    async def around(self, method: str, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        self.trust(context)
        yield

    def wrap_unary(self, method: str, behavior: Unary) -> Unary:
        trust = self.trust

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            trust(context)
            return await behavior(request, context)

        return unary

    @staticmethod
    def trust(context: grpc.aio.ServicerContext) -> None:
        tenant = (metadata_value(context, TENANT_KEY) or "").strip() or DEFAULT_TENANT_ID
        current_identity.set(Identity(tenant_id=tenant, key_id=TRUSTED_KEY_ID, is_admin=True))


def status_of(error: CohortError) -> status_pb2.Status:
    """The rich `google.rpc.Status` a client sees for a domain error."""
    status = status_pb2.Status(code=error.status_code.value[0], message=error.message)
    status.details.add().Pack(
        error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN, metadata=error.metadata)
    )
    if isinstance(error, InvalidArgument):
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=error.field, description=error.description
        )
        status.details.add().Pack(error_details_pb2.BadRequest(field_violations=[violation]))
    return status


def internal_status(request_id: str | None) -> status_pb2.Status:
    """What a client sees for an unexpected exception: a request id to quote, nothing internal."""
    message = f"internal error (request id {request_id})" if request_id else "internal error"
    status = status_pb2.Status(code=grpc.StatusCode.INTERNAL.value[0], message=message)
    status.details.add().Pack(error_details_pb2.ErrorInfo(reason="INTERNAL", domain=ERROR_DOMAIN))
    return status


def unavailable_status(request_id: str | None) -> status_pb2.Status:
    """What a client sees when a dependency (the database, Redis) is briefly unreachable: retry."""
    suffix = f" (request id {request_id})" if request_id else ""
    status = status_pb2.Status(
        code=grpc.StatusCode.UNAVAILABLE.value[0],
        message=f"a dependency of this service is unavailable; retry shortly{suffix}",
    )
    status.details.add().Pack(
        error_details_pb2.ErrorInfo(reason="DEPENDENCY_UNAVAILABLE", domain=ERROR_DOMAIN)
    )
    return status


async def abort_with(
    context: grpc.aio.ServicerContext, status: status_pb2.Status, cause: BaseException
) -> NoReturn:
    """Ends the RPC with `status` in the trailers; re-raises `cause` if the RPC was already aborted."""
    grpc_status = rpc_status.to_status(status)
    request_id = current_request_id.get()
    if request_id is not None:
        grpc_status = grpc_status._replace(
            trailing_metadata=(*grpc_status.trailing_metadata, (REQUEST_ID_KEY, request_id))
        )
    try:
        await context.abort_with_status(grpc_status)
    except grpc.aio.UsageError:
        # The servicer aborted first and then raised something else; its status stands.
        raise cause from None


class ErrorInterceptor(AroundInterceptor):
    """Maps `CohortError`s to their status and anything unexpected to an opaque `INTERNAL`."""

    @asynccontextmanager
    async def around(self, method: str, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        try:
            yield
        except grpc.aio.AbortError:
            raise
        except CohortError as error:
            await abort_with(context, status_of(error), error)
        except Exception as error:
            await self.internal(method, context, error)

    def wrap_unary(self, method: str, behavior: Unary) -> Unary:
        internal = self.internal

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                return await behavior(request, context)
            except grpc.aio.AbortError:
                raise
            except CohortError as error:
                await abort_with(context, status_of(error), error)
            except Exception as error:
                await internal(method, context, error)

        return unary

    @staticmethod
    async def internal(method: str, context: grpc.aio.ServicerContext, error: Exception) -> NoReturn:
        request_id = current_request_id.get()
        if is_transient(error):
            # A database or Redis restart: the caller retries, and nothing here is a bug.
            logger.warning("%s: a dependency is unavailable (request id %s): %s", method, request_id, error)
            await abort_with(context, unavailable_status(request_id), error)
        logger.exception("unhandled error in %s (request id %s)", method, request_id)
        await abort_with(context, internal_status(request_id), error)


ClientIntercept = Callable[[Callable[..., Awaitable[Any]], grpc.aio.ClientCallDetails, Any], Awaitable[Any]]
"""`(continuation, call_details, request_or_iterator) -> call`: one client interception for all kinds."""


class _UnaryUnaryClient(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, intercept: ClientIntercept) -> None:
        self._intercept = intercept

    async def intercept_unary_unary(self, continuation, client_call_details, request):
        return await self._intercept(continuation, client_call_details, request)


class _UnaryStreamClient(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, intercept: ClientIntercept) -> None:
        self._intercept = intercept

    async def intercept_unary_stream(self, continuation, client_call_details, request):
        return await self._intercept(continuation, client_call_details, request)


class _StreamUnaryClient(grpc.aio.StreamUnaryClientInterceptor):
    def __init__(self, intercept: ClientIntercept) -> None:
        self._intercept = intercept

    async def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return await self._intercept(continuation, client_call_details, request_iterator)


class _StreamStreamClient(grpc.aio.StreamStreamClientInterceptor):
    def __init__(self, intercept: ClientIntercept) -> None:
        self._intercept = intercept

    async def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return await self._intercept(continuation, client_call_details, request_iterator)


def client_interceptors_for(intercept: ClientIntercept) -> list[grpc.aio.ClientInterceptor]:
    """Client interceptors applying `intercept` to calls of every kind.

    One object per kind because a grpc.aio channel files each interceptor under the first kind it
    subclasses only: a single class deriving from all four would silently skip streaming calls.
    """
    return [
        _UnaryUnaryClient(intercept),
        _UnaryStreamClient(intercept),
        _StreamUnaryClient(intercept),
        _StreamStreamClient(intercept),
    ]
