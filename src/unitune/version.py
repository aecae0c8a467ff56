"""The package version (pyproject.toml says the same), in a module of its own so any module can import it
without importing the package's public API."""

__version__ = "0.1.0"
