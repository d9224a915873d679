"""Pure, typed domain code shared by the stream workers, the trainer and the API.

Nothing here imports a server framework, a broker client or a Redis client.
"""

__version__ = "0.1.0"
