"""streams role."""
