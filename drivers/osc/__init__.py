"""OSC to and from lighting consoles and show control: UDP and OSC 1.1 SLIP over TCP."""
