"""Credentials out of any text the bridge shows: one rule for config messages, eval reports and the scorers.

A leaf module (no imports of the bridge's own), so every layer can use it.
"""

from __future__ import annotations

import re

# ``scheme://user:password@`` (greedy to the last ``@``: a password may hold an unencoded ``@`` or ``/``, and hiding
# too much is the safe side), and ``user:password@host`` without a
# scheme, which is how a URL with credentials looks when someone forgets the ``https://``.
_USERINFO = re.compile(r"(?<=://)[^\s\"']*@|(?<![\w/:.@-])[^\s\"'/:@]+:[^\s\"'/@]*@")


def hide_url_credentials(text: str) -> str:
    """``https://user:password@host`` as ``https://***@host`` (and ``user:pw@host`` as ``***@host``), anywhere in
    ``text``."""
    return _USERINFO.sub("***@", text)


# A URL's query and fragment (``?token=...``): where a hosted API or a gateway may carry a key.
_URL_TAIL = re.compile(r"(\w+://[^\s'\"?#]*)[?#][^\s'\"]*")


def hide_url_secrets(text: str) -> str:
    """:func:`hide_url_credentials`, and every URL's query string and fragment dropped, anywhere in ``text``
    (aiohttp quotes a request's whole ``url='…'`` in its errors)."""
    return hide_url_credentials(_URL_TAIL.sub(r"\1", text))
