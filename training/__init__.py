"""training role."""
