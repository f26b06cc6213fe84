"""The project's models of equipment behaviour and the code that trains and evaluates them (run from the repo root)."""
