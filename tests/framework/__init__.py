"""Test harness shared by the package and end-to-end tests (registries, VM handles)."""
