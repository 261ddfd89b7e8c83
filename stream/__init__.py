"""meshstream runtime: sources, pipeline, ZeroMQ protocol, writers and the command line."""

__version__ = "0.1.0"
