"""Custom C++/CUDA ops with pure-TF fallbacks."""
