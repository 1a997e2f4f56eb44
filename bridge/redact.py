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
