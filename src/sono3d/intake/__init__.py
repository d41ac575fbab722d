"""Clinical echo intake: finding the imaging sector in a recorded echo and resampling it (to come)."""
