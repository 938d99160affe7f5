"""Acquire MNIST and build the continual-learning task streams (Rotations, Permutations, Many Permutations)."""
