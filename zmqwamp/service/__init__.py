"""zmqwamp's service layer."""
