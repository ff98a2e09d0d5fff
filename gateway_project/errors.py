"""The one error every gateway refusal raises, rendered in OpenAI's error shape (or Anthropic's, on its API)."""

import json

# Anthropic's error types by status (docs.anthropic.com/en/api/errors); its SDK picks the exception by status.
ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}


class GatewayError(Exception):
    """A refusal with an HTTP status, an OpenAI-style ``type`` and a specific ``code``."""

    def __init__(self, status: int, type_: str, code: str, message: str, headers: list | None = None):
        super().__init__(message)
        self.status = status
        self.type = type_
        self.code = code
        self.message = message
        self.headers = headers or []

    def body(self, request_id: str) -> bytes:
        return json.dumps(
            {
                "error": {
                    "type": self.type,
                    "message": self.message,
                    "code": self.code,
                    "param": None,
                    "request_id": request_id,
                }
            }
        ).encode()

    def anthropic_body(self, request_id: str) -> bytes:
        """The error in Anthropic's shape, keeping the gateway's ``code`` beside its ``type``."""
        fallback = "api_error" if self.status >= 500 else "invalid_request_error"
        error = {"type": ANTHROPIC_TYPES.get(self.status, fallback), "message": self.message, "code": self.code}
        return json.dumps({"type": "error", "error": error, "request_id": request_id}).encode()


def bad_request(message: str, code: str = "invalid_request") -> GatewayError:
    return GatewayError(400, "invalid_request_error", code, message)


def not_found(message: str, code: str = "not_found") -> GatewayError:
    return GatewayError(404, "not_found_error", code, message)


def forbidden(message: str, code: str) -> GatewayError:
    return GatewayError(403, "permission_error", code, message)
