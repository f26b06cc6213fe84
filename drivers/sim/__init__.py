"""The virtual venue: a scripted show with its crowd, sound, air, amplifiers, power and faults."""
