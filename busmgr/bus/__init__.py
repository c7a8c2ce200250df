"""The bus face: D-Bus objects, signals and the activation bridge.

This package only translates: method calls become :class:`busmgr.control.Control` operations,
job state becomes signals and properties. It holds no life-cycle logic.
"""
