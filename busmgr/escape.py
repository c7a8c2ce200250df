"""Escaping of names into single path elements, as systemd escapes unit names.

Every byte outside ``[A-Za-z0-9]``, and a leading digit, becomes ``_xx`` (two lowercase hex
digits); the empty string becomes ``_``. The mapping is injective, so :func:`unescape` inverts it
and two different names never share an element. One escaper serves every place that turns a job
or instance name into a path element: D-Bus object paths, cgroup leaves, activation unit names
and log files.

A leaf module: it imports nothing of busmgr.
"""

from __future__ import annotations

import functools
import re
import string

__all__ = ["escape", "unescape"]

_SAFE = frozenset((string.ascii_letters + string.digits).encode())
_ESCAPED = re.compile(rb"_([0-9a-fA-F]{2})")


def escape(text: str) -> str:
    """``"getty-tty1"`` -> ``"getty_2dtty1"``; ``""`` -> ``"_"``; ``"1x"`` -> ``"_31x"``.

    A name that needs no escaping (ASCII letters and digits, not starting with a digit: most
    job names) is returned as it is without a look at each byte; the others are remembered
    (:func:`_escape_bytes`), since ``ListJobs`` asks for every name on every call."""
    if text.isascii() and text.isalnum() and not text[0].isdigit():
        return text
    return _escape_bytes(text)


@functools.lru_cache(maxsize=4096)
def _escape_bytes(text: str) -> str:
    if not text:
        return "_"
    out = []
    for i, byte in enumerate(text.encode("utf-8", "surrogatepass")):
        if byte in _SAFE and not (i == 0 and 0x30 <= byte <= 0x39):
            out.append(chr(byte))
        else:
            out.append(f"_{byte:02x}")
    return "".join(out)


def unescape(element: str) -> str:
    """Inverse of :func:`escape` (``_`` alone is the empty string); bytes that are not UTF-8
    are replaced, so a foreign path element never raises."""
    if element == "_":
        return ""
    raw = _ESCAPED.sub(lambda m: bytes([int(m.group(1), 16)]), element.encode())
    return raw.decode("utf-8", errors="replace")
