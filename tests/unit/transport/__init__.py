"""Unit tests of zmqwamp.transport, one module per module."""
