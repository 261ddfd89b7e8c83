"""meshstream engines: the models (detector, landmarks, lifter, body) and how they run."""
