"""Builds the optional custom op (custom_ops/) into the package; see custom_ops/README."""
from setuptools import setup

setup()
