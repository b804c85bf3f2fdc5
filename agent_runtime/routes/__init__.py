"""One module per route family; each builds :class:`agent_runtime.pipeline.Route` objects."""
