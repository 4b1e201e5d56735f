"""The Oscar shop's own code: what a shop writes to plug imgrec in (rules and a receiver)."""
