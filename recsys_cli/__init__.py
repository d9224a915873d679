"""The ``recsys`` command line."""
