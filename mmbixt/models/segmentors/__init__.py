"""mmbixt segmentors (registered on import)."""
