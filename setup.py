"""Build of the optional C extension; everything else about the package is in pyproject.toml.

`videolang.losses._sinkhorn_kernel` runs the fused CPU Sinkhorn iterations (videolang/losses/fused_sinkhorn.py).
It needs GCC or Clang; where it cannot be built, the install goes on without it and the torch loop runs.
"""

import sys

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "videolang.losses._sinkhorn_kernel",
            sources=["videolang/losses/_sinkhorn_kernel.c"],
            depends=["videolang/losses/_sinkhorn_iterate.h"],
            # -O3 unrolls the short inner loops; no fast-math: divisions and sums stay IEEE (FMA contraction
            # only, which GCC and Clang do by default).
            extra_compile_args=[] if sys.platform == "win32" else ["-O3"],
            optional=True,
        )
    ]
)
