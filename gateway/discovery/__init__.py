"""Finding the box on the venue network: the daemon announces its API (and its OSC input) over mDNS/DNS-SD, and
`venue-gateway discover` lists the boxes that answer (docs/discovery.md)."""
