"""The batch retraining job: Beam + TFT, Keras under tf.distribute, export, evaluation."""
