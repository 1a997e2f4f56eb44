"""The HTTP surface: the aiohttp application, the upstream session and the passthrough relay."""
