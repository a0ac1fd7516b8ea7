"""mmbixt classifiers (registered on import)."""
