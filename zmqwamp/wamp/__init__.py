"""zmqwamp's wamp layer."""
