"""upgrade package (see docs/ARCHITECTURE.md)."""
