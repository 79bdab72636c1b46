"""More than one device or process: tf.distribute, keras.distribution, local workers."""
