"""Unit tests of zmqwamp.upstream, one module per module."""
