"""Answers carry the engine's headers, not aiohttp's: no ``Server``, ``Date`` or default ``Content-Type`` of its own.

aiohttp adds those while it prepares a response, after the handler is done with it. The headers present before
that moment are recorded (``record_headers``); the ``on_response_prepare`` hook (``drop_added_headers``) then
removes whatever aiohttp put in on top. Answers nobody recorded (the bridge's own) lose ``Server`` and ``Date``:
the engine sends neither, and the bridge does not advertise its software.
"""

from __future__ import annotations

from aiohttp import hdrs, web

_ADDED = (hdrs.DATE, hdrs.SERVER, hdrs.CONTENT_TYPE)
_present_key = web.ResponseKey("headers_before_prepare", tuple)


def record_headers(response: web.StreamResponse) -> None:
    """Remember which of the headers aiohttp would add are there already; call before ``prepare``."""
    if not response.prepared:
        headers = response.headers
        response[_present_key] = tuple(name in headers for name in _ADDED)


async def drop_added_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``app.on_response_prepare``: take out what aiohttp added to the answer."""
    present = response.get(_present_key)
    headers = response.headers
    if present is None:
        headers.popall(hdrs.DATE, None)
        headers.popall(hdrs.SERVER, None)
        return
    for name, was_there in zip(_ADDED, present, strict=True):
        if not was_there:
            headers.popall(name, None)
