"""An OpenAPI 3.0 document of the REST routes, generated from the same descriptors as the routes.

Paths and verbs come from the `google.api.http` rules; path parameters from the template variables;
query parameters (for routes whose body is not `*`) from the request fields bound by neither path
nor body, flattened to `a.b` names; request and response schemas from the message descriptors, in
the protobuf canonical JSON form the gateway speaks (64-bit integers as strings, enums as names).
"""

from __future__ import annotations

from typing import Any

from google.api import field_behavior_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from cohort.services.gateway.transcoding import Route

_REF = "#/components/schemas/"
_MAX_QUERY_DEPTH = 4

_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?\d+(\.\d{1,9})?s$", "example": "1.5s"},
    "google.protobuf.FieldMask": {"type": "string"},
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "additionalProperties": True,
    },
    "google.protobuf.DoubleValue": {"type": "number", "format": "double", "nullable": True},
    "google.protobuf.FloatValue": {"type": "number", "format": "float", "nullable": True},
    "google.protobuf.Int64Value": {"type": "string", "format": "int64", "nullable": True},
    "google.protobuf.UInt64Value": {"type": "string", "format": "uint64", "nullable": True},
    "google.protobuf.Int32Value": {"type": "integer", "format": "int32", "nullable": True},
    "google.protobuf.UInt32Value": {"type": "integer", "format": "int64", "minimum": 0, "nullable": True},
    "google.protobuf.BoolValue": {"type": "boolean", "nullable": True},
    "google.protobuf.StringValue": {"type": "string", "nullable": True},
    "google.protobuf.BytesValue": {"type": "string", "format": "byte", "nullable": True},
}

_SCALARS: dict[int, dict[str, Any]] = {
    FieldDescriptor.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_UINT32: {"type": "integer", "format": "int64", "minimum": 0},
    FieldDescriptor.TYPE_FIXED32: {"type": "integer", "format": "int64", "minimum": 0},
    FieldDescriptor.TYPE_INT64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_SINT64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_SFIXED64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_UINT64: {"type": "string", "format": "uint64"},
    FieldDescriptor.TYPE_FIXED64: {"type": "string", "format": "uint64"},
    FieldDescriptor.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FieldDescriptor.TYPE_FLOAT: {"type": "number", "format": "float"},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "format": "byte"},
}


class _Schemas:
    def __init__(self) -> None:
        self.components: dict[str, Any] = {}

    def ref(self, descriptor: Descriptor) -> dict[str, Any]:
        if descriptor.full_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[descriptor.full_name])
        if descriptor.full_name not in self.components:
            self.components[descriptor.full_name] = {}  # placeholder: recursive types stop here
            self.components[descriptor.full_name] = self._message(descriptor)
        return {"$ref": _REF + descriptor.full_name}

    def _message(self, descriptor: Descriptor) -> dict[str, Any]:
        properties = {field.json_name: self.field(field) for field in descriptor.fields}
        schema: dict[str, Any] = {"type": "object", "properties": properties}
        required = [f.json_name for f in descriptor.fields if _behaviour(f, field_behavior_pb2.REQUIRED)]
        if required:
            schema["description"] = "Required fields: " + ", ".join(required) + "."
        return schema

    def field(self, field: FieldDescriptor) -> dict[str, Any]:
        if field.is_repeated and field.message_type is not None and field.message_type.GetOptions().map_entry:
            value = field.message_type.fields_by_name["value"]
            return {"type": "object", "additionalProperties": self.single(value)}
        schema = self.single(field)
        if field.is_repeated:
            schema = {"type": "array", "items": schema}
        if _behaviour(field, field_behavior_pb2.OUTPUT_ONLY):
            schema = (
                {**schema, "readOnly": True}
                if "$ref" not in schema
                else {"allOf": [schema], "readOnly": True}
            )
        return schema

    def single(self, field: FieldDescriptor) -> dict[str, Any]:
        if field.type == FieldDescriptor.TYPE_ENUM:
            return {"type": "string", "enum": [value.name for value in field.enum_type.values]}
        if field.type in (FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_GROUP):
            return self.ref(field.message_type)
        return dict(_SCALARS[field.type])


def _behaviour(field: FieldDescriptor, behaviour: int) -> bool:
    return behaviour in field.GetOptions().Extensions[field_behavior_pb2.field_behavior]


def _query_parameters(
    schemas: _Schemas, descriptor: Descriptor, bound: set[str], prefix: str = "", depth: int = 0
) -> list[dict[str, Any]]:
    parameters: list[dict[str, Any]] = []
    for field in descriptor.fields:
        name = prefix + field.name
        if name in bound or any(name.startswith(b + ".") for b in bound):
            continue
        if field.is_repeated and field.message_type is not None and field.message_type.GetOptions().map_entry:
            continue  # maps cannot be set from a query string
        is_message = field.type == FieldDescriptor.TYPE_MESSAGE
        if is_message and field.message_type.full_name not in _WELL_KNOWN:
            if not field.is_repeated and depth < _MAX_QUERY_DEPTH:
                parameters += _query_parameters(schemas, field.message_type, bound, name + ".", depth + 1)
            continue
        schema = schemas.single(field)
        parameter: dict[str, Any] = {"name": name, "in": "query", "required": False}
        if field.is_repeated:
            parameter["schema"] = {"type": "array", "items": schema}
            parameter["explode"] = True
        else:
            parameter["schema"] = schema
        parameters.append(parameter)
    return parameters


def _field_at(descriptor: Descriptor, path: str) -> FieldDescriptor | None:
    field = None
    for part in path.split("."):
        if descriptor is None:
            return None
        field = descriptor.fields_by_name.get(part)
        if field is None:
            return None
        descriptor = field.message_type
    return field


def openapi_document(
    routes: list[Route], *, title: str = "Cohort API", version: str = "v1"
) -> dict[str, Any]:
    schemas = _Schemas()
    status_ref = schemas.ref(_status_descriptor())
    paths: dict[str, dict[str, Any]] = {}
    operation_ids: set[str] = set()
    for route in routes:
        descriptor = route.request_descriptor
        parameters: list[dict[str, Any]] = []
        for variable in route.template.variables:
            field = _field_at(descriptor, variable)
            schema = schemas.single(field) if field is not None else {"type": "string"}
            parameters.append({"name": variable, "in": "path", "required": True, "schema": schema})
        if route.body != "*":
            bound = set(route.template.variables) | ({route.body} if route.body else set())
            parameters += _query_parameters(schemas, descriptor, bound)
        service_name = route.service.rsplit(".", 1)[-1]
        operation_id = f"{service_name}_{route.method.name}"
        while operation_id in operation_ids:
            operation_id += "_"
        operation_ids.add(operation_id)
        operation: dict[str, Any] = {
            "operationId": operation_id,
            "tags": [service_name],
            "summary": f"{route.service}.{route.method.name} (gRPC)",
            "parameters": parameters,
            "responses": {
                "200": _success(schemas, route, status_ref),
                "default": {
                    "description": "An error: a google.rpc.Status with grpc-gateway's HTTP status.",
                    "content": {"application/json": {"schema": status_ref}},
                },
            },
        }
        body_schema = _body_schema(schemas, route)
        if body_schema is not None:
            operation["requestBody"] = {
                "required": False,
                "content": {"application/json": {"schema": body_schema}},
            }
        paths.setdefault(route.template.openapi_path, {})[route.http_method.lower()] = operation
    return {
        "openapi": "3.0.3",
        "info": {
            "title": title,
            "version": version,
            "description": "REST transcoding of the Cohort gRPC API, generated from its protobuf "
            "descriptors.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas.components,
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"apiKey": []}],
    }


def _body_schema(schemas: _Schemas, route: Route) -> dict[str, Any] | None:
    if not route.body:
        return None
    descriptor = route.request_descriptor
    if route.body == "*":
        schema = schemas.ref(descriptor)
    else:
        field = descriptor.fields_by_name[route.body]
        schema = schemas.single(field)
    if route.client_streaming:
        return {
            "type": "array",
            "items": schema,
            "description": "The stream's request messages: a JSON array, or NDJSON (one per line).",
        }
    return schema


def _success(schemas: _Schemas, route: Route, status_ref: dict[str, Any]) -> dict[str, Any]:
    response_ref = schemas.ref(route.method.output_type)
    if not route.server_streaming:
        return {"description": "OK", "content": {"application/json": {"schema": response_ref}}}
    item = {"type": "object", "properties": {"result": response_ref, "error": status_ref}}
    return {
        "description": 'A stream: newline-delimited JSON objects, {"result": ...} per message, '
        '{"error": <Status>} last if the stream fails.',
        "content": {"application/json": {"schema": item}},
    }


def _status_descriptor() -> Descriptor:
    from google.rpc import status_pb2

    return status_pb2.Status.DESCRIPTOR
