"""The one build step beyond pyproject.toml: the clone spawn library, a plain C shared library
(no Python API) that busmgr/process/clonespawn.py loads with ctypes. It is optional: without a
compiler the install still succeeds, and busmgr spawns the slower way, in Python."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "busmgr.process._clonespawn",
            ["busmgr/process/_clonespawn.c"],
            extra_compile_args=["-O2", "-Wall"],
            optional=True,
        )
    ]
)
