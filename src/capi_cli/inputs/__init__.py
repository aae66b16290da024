"""Reshaping inputs before events are built: presets, filters, line-item grouping, locales (SPEC §4)."""
