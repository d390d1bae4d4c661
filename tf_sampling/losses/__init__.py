"""Sampled losses: sampled softmax, NCE, negative sampling."""
