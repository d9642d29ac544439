"""Pure core: no aiohttp, no asyncio, no I/O."""
