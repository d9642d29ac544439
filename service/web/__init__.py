"""aiohttp: the app factory, middlewares, the rooms handler, probes and metrics."""
