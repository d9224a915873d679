"""serving role."""
