"""Neural network building blocks shared by the variants."""
