"""mmbixt heads (registered on import)."""
