"""Cross-package end-to-end tests and the fixtures and harness they share."""
