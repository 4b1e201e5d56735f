"""Request bodies built by hand, as a hostile or plain HTTP client sends them."""

from __future__ import annotations

import io
import uuid


def multipart(fields: dict[str, str], files: list[tuple[str, bytes, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body and its content type; ``files`` are ``(field, raw filename
    bytes, content)`` so a filename reaches the server exactly as given (``../``, CR LF, NUL)."""
    boundary = uuid.uuid4().hex
    out = io.BytesIO()
    for name, value in fields.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode())
        out.write(value.encode() + b"\r\n")
    for name, filename, content in files:
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '.encode())
        out.write(b'filename="' + filename + b'"\r\nContent-Type: application/octet-stream\r\n\r\n')
        out.write(content + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"
