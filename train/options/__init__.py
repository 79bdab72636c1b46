"""The commands' flags, their checks, and the Keras backend they pick."""
