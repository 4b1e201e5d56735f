"""Request parsers that answer malformed bodies with a 400, never a 500."""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

# No imgrec endpoint takes JSON nested deeper than this; deeper bodies are refused before the
# serializers walk them.
MAX_JSON_DEPTH = 32


def _depth(value: Any, limit: int) -> int:
    """How deeply ``value`` nests, counting at most to ``limit + 1`` (iterative: no recursion)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        node, level = stack.pop()
        if not isinstance(node, (dict, list)):
            continue
        deepest = max(deepest, level)
        if deepest > limit:
            return deepest
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, level + 1) for child in children)
    return deepest


class BoundedJSONParser(JSONParser):
    """DRF's ``JSONParser``, but a body nested beyond Python's recursion limit (``json`` raises
    ``RecursionError``, which DRF lets through as a 500) or beyond :data:`MAX_JSON_DEPTH` is a
    400 "JSON parse error"."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(f"JSON parse error - nested deeper than {MAX_JSON_DEPTH} levels.") from None
        if _depth(data, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
            raise ParseError(f"JSON parse error - nested deeper than {MAX_JSON_DEPTH} levels.")
        return data
