"""In-memory tests: the bridge's code on Twisted, as it runs in twistd (see tests/conftest.py)."""

from conftest import pin_txaio

pin_txaio("twisted")
