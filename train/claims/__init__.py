"""The paper's claims as data (`python -m train.paper`) and their report."""
