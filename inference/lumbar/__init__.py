"""Weights-free lumbosacral pedicle screw planning (frames, isthmus, trajectory, catalogue)."""
