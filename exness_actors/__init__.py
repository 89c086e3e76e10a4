"""The pure trading core. Importing the package first picks its build (see :mod:`exness_actors._build`)."""

from exness_actors._build import BUILD, BUILD_REASON

__all__ = ["BUILD", "BUILD_REASON"]
