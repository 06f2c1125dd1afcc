"""Tests against real processes, driven by autobahn's asyncio clients (see tests/conftest.py)."""

from conftest import pin_txaio

pin_txaio("asyncio")
