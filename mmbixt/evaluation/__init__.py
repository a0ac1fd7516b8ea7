"""mmbixt evaluation (registered on import)."""
