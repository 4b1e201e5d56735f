"""Business logic: typed service functions called by views, template tags, tasks and commands."""
