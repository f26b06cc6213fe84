"""The show: effects, presets, and the engine that fires them at an absolute time."""
