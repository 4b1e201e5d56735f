"""A strict Content-Security-Policy for the demo shop (Django 5.2 has no built-in CSP).

imgrec's templates have no inline scripts, inline styles or event-handler attributes: the shelf
stylesheet and the admin/lazy-shelf scripts are static files, configured through data- attributes.
The demo therefore runs under a policy that refuses anything inline, and the browser test
(tests/test_browser.py) fails on any violation it logs.  ``img-src`` also allows ``data:`` for the
thumbnail of the visitor's own photo on the search-by-photo page.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'self'"
)


class ContentSecurityPolicyMiddleware:
    """Sends :data:`POLICY` with every response that does not set its own."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", POLICY)
        return response
