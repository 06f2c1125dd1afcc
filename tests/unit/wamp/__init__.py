"""Unit tests of zmqwamp.wamp, one module per module."""
