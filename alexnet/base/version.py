"""The package's version: the installed distribution's, or that of a source tree run with PYTHONPATH=."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("alexnet")
except PackageNotFoundError:  # run from a source tree that is not installed (the GPU machines: PYTHONPATH=.)
    __version__ = "0.1.0+source"
