"""isorun-backend: the reference control plane."""
