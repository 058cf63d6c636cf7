"""Message definitions (one module per destination) and the one codec. No torch, no zmq."""
