"""zmqwamp's upstream layer."""
