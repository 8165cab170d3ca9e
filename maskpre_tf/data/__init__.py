"""Data: dataset readers (records), the generated-pedestrian demo set, and the tf.data pipeline."""
