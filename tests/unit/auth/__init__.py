"""Unit tests of zmqwamp.auth.cred, one module per module."""
