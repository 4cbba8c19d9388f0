"""isorun-hostd: the per-host daemon that owns images, microVMs and the guest agent channel."""
