"""mmbixt necks (registered on import)."""
