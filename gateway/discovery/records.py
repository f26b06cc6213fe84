"""What the box announces over DNS-SD, as the announcer and `discover` both read it: the service types and the
version of the TXT records' layout (docs/discovery.md)."""

DOMAIN = "local."
GATEWAY_TYPE = "_venue-gateway._tcp.local."  # the API; TXT: txtvers, id, venue, version, path, scheme, fingerprint
OSC_UDP_TYPE = "_osc._udp.local."  # an OSC input; TXT: txtvers, id, venue (the box it belongs to)
OSC_TCP_TYPE = "_osc._tcp.local."  # the same input's SLIP over TCP, where it takes it
TXT_VERSION = "1"  # a key added keeps it; a key changed or dropped raises it
