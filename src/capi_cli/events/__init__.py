"""Events input: reading, field mapping, normalization and hashing, validation, payload building.

The entry point is `capi_cli.events.pipeline.iter_events`.
"""
