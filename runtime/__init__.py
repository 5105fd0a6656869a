"""runtime package (see docs/ARCHITECTURE.md)."""
