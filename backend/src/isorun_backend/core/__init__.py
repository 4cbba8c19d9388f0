"""Configuration and security primitives shared by the API and the services."""
