"""The command-line surface: the only package that imports typer or rich."""
