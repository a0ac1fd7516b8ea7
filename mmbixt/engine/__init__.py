"""mmbixt engine (registered on import)."""
