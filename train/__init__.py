"""Training commands that show what batch normalization does.

python -m train.compare            # no BN vs Keras BN vs kbn BN (the `make run` job)
python -m train.train --bn kbn     # one run
python -m train.lr_sweep           # every variant over a range of learning rates
python -m train.paper              # the paper's claims rerun: logs/paper/<time>/report.md
python -m train.explain            # Algorithm 1 on the lecture's placement batch, number by number
python -m train.recalibration      # kbn.recalibrate (Algorithm 2) after training, measured
python -m train.diff_runs A B      # how far two runs are apart (e.g. 1 process vs 2 workers)

Every training command takes `--backend tensorflow|jax|torch` (train/options/backend.py).
"""
