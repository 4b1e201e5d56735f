"""The demo shop's own catalogue: categories and products (not imgrec's models)."""
