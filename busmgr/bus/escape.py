"""Object path escaping as systemd escapes unit names (``sd_bus_path_encode``).

Every byte outside ``[A-Za-z0-9]``, and a leading digit, becomes ``_xx`` (two lowercase hex
digits); the empty string becomes ``_``. The mapping is injective, so :func:`unescape` inverts it.
"""

from __future__ import annotations

import string

_SAFE = frozenset((string.ascii_letters + string.digits).encode())


def escape(text: str) -> str:
    """``"getty-tty1"`` -> ``"getty_2dtty1"``; ``""`` -> ``"_"``; ``"1x"`` -> ``"_31x"``."""
    if not text:
        return "_"
    out = []
    for i, byte in enumerate(text.encode()):
        if byte in _SAFE and not (i == 0 and chr(byte).isdigit()):
            out.append(chr(byte))
        else:
            out.append(f"_{byte:02x}")
    return "".join(out)


def unescape(element: str) -> str:
    """Inverse of :func:`escape`."""
    if element == "_":
        return ""
    raw = bytearray()
    i = 0
    while i < len(element):
        if element[i] == "_":
            raw.append(int(element[i + 1 : i + 3], 16))
            i += 3
        else:
            raw.append(ord(element[i]))
            i += 1
    return raw.decode()
