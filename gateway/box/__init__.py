"""The box itself, as a venue tech meets it: `venue-gateway first-boot` (the one-time set-up of a new box: its host
name, API tokens and certificate) and `venue-gateway doctor` (what to check before doors, each problem with its
fix)."""
