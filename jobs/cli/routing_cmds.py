"""Router commands: train, calibrate, score, eval (filled in by the routers issue)."""
