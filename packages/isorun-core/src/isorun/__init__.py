"""isorun: the client for isorun sandboxes."""
