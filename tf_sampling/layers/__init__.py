"""Keras layers (output heads) built on the samplers and losses."""
