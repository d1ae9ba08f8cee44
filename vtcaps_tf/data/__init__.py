"""The TFRecord schema (`features`) and the tf.data readers (`dataset`)."""
