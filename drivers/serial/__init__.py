"""Serial sensor buses: Modbus RTU, line-protocol sensor nodes, the XL2 sound level meter."""
