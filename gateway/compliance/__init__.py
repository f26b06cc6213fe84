"""Sound-level compliance: rolling LAeq and maxima per zone against the limits of a profile or the config."""
