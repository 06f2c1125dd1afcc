"""zmqwamp's transport layer."""
