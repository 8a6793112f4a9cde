"""The Examples sections of the medlens.seg docstrings run and print what they show."""

import doctest
import importlib

import pytest


@pytest.mark.parametrize("name", ["metrics", "models"])
def test_docstring_examples(name):
    module = importlib.import_module(f"medlens.seg.{name}")
    assert doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE).failed == 0
