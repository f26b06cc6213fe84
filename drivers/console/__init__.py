"""DMX in from lighting consoles: sACN (E1.31) and Art-Net 4 receivers, the merge of their sources."""
