"""DMX lighting outputs: Art-Net 4, sACN (E1.31) and the Enttec DMX USB Pro."""
