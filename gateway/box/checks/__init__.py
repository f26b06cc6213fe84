"""The doctor's checks, one module a subject; gateway.box.checklist lists them in order."""
