"""The HTTP door: a FastAPI app over the service core."""
