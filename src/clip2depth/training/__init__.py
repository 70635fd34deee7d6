"""Training the mirror and decoder: recipes, loss, the training loop and its resume state."""
