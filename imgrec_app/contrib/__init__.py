"""Optional helpers that are not part of imgrec's core."""
