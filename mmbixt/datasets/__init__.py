"""mmbixt datasets (registered on import)."""
