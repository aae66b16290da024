"""capi: Conversions API for Business Messaging from the command line."""

__version__ = "0.1.0"
