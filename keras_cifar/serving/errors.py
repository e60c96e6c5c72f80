"""The server's two error shapes: ours ({"error": {"status", "message", "filename"}}) for the upload API and the
page, and TF Serving's ({"error": "message"}) for its REST API, which its clients parse."""

from __future__ import annotations

from fastapi.responses import JSONResponse


class APIError(Exception):
    def __init__(self, status: int, message: str, filename: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.filename, self.headers = status, message, filename, headers


def error_response(status: int, message: str, filename: str | None = None, headers: dict | None = None) -> JSONResponse:
    body = {"status": status, "message": message}
    if filename is not None:
        body["filename"] = filename
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def tf_serving_error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)
