"""Search interception: decide (plan), fetch the window, score it, merge it back into the engine's answer."""
