"""The public HTTP API (spec/api.md): routes parse and translate, services act."""
