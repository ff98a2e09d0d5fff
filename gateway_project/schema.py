"""The management API's OpenAPI schema: drf-spectacular's, with the error answers every operation can give.

drf-spectacular documents the success answer only, so a client (or a schema fuzzer) reading the schema
would take every 400, 401, 403, 404, 415 and 429 for a surprise. They are not: each comes from a mechanism
that applies to whole classes of operations, and each has one body (``gateway_project.api.exception_handler``:
a JSON object with a ``detail``, and field errors beside it for a 400).
"""

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import ResolvedComponent

ERROR = ResolvedComponent(
    name="Error",
    type=ResolvedComponent.SCHEMA,
    object="Error",
    schema={
        "type": "object",
        "description": "An error. A validation error (400) also lists each field's messages under the field's name.",
        "properties": {"detail": {"type": "string", "description": "What went wrong, in one sentence."}},
        "required": ["detail"],
        "additionalProperties": True,
    },
)

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class GatewayAutoSchema(AutoSchema):
    """drf-spectacular's AutoSchema, adding the error answers an operation can give (see the module's doc)."""

    def get_operation(self, path, path_regex, path_prefix, method, registry):
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is None:
            return None
        registry.register_on_missing(ERROR)
        responses = operation.setdefault("responses", {})
        for code, description in self._errors(operation):
            answer = responses.setdefault(code, {"description": description})
            answer.setdefault("content", {"application/json": {"schema": ERROR.ref}})
        return operation

    def _errors(self, operation) -> list[tuple[str, str]]:
        places = {parameter["in"] for parameter in operation.get("parameters", [])}
        errors = []
        # A body that does not parse is refused whatever the operation expects in it; so is a bad query parameter.
        if "query" in places or self.method in UNSAFE_METHODS or "requestBody" in operation:
            errors.append(("400", "Invalid input: `detail` says what, and each field's messages are under its name."))
        if operation.get("security") != [{}]:
            errors.append(("401", "No credentials, or credentials that are not valid."))
            errors.append(("403", "Your role does not allow this."))
        if "path" in places:
            errors.append(("404", "Nothing with this id (or nothing of yours)."))
        if "requestBody" in operation:
            errors.append(("415", "A body in a media type the operation does not take (or none named)."))
        errors.append(("429", "Too many requests lately; try again after the Retry-After header's seconds."))
        return errors
