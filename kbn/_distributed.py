"""Cross-replica sums for `synchronized=True` (TensorFlow backend only).

Under a `tf.distribute` strategy each replica sees only its slice of the global
batch. `_generic.moments` calls `replica_sum` to add its partial sums over all
replicas, so every replica normalizes with the statistics of the whole global
batch, as if it ran on one device. Outside a multi-replica context the sums
are returned unchanged.
"""

import tensorflow as tf


def replica_sum(tensors):
    """Sums a list of tensors over all replicas in sync."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return tensors
    return context.all_reduce(tf.distribute.ReduceOp.SUM, tensors)
