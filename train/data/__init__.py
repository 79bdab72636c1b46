"""The data sets, the models and the batch-norm variants that the commands train."""
