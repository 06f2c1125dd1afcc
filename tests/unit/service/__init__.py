"""Unit tests of zmqwamp.service, one module per module."""
