"""Build of the one C extension (oklog/_fast.c); everything else is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("oklog._fast", ["oklog/_fast.c"], extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"]),
    ]
)
