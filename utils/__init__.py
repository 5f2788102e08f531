"""Small, separately tested pieces of the training recipe: one module per trick or concern."""
