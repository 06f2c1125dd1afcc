"""zmqwamp's auth layer."""
