"""The arithmetic of `python -m train.explain`: Algorithm 1 by hand, and the backends' autodiff."""
