"""The names of the metrics a run reports (metrics.csv columns, summary.json keys, logger keys)."""

# The test set, evaluated once at the end of a run (with data.val_split; without one, validation is
# the test set and these repeat the last epoch's validation metrics).
TEST_ACC = "test_acc"
TEST_ACC_ARTICLE = "test_acc_article"
TEST_LOSS = "test_loss"
TEST_LOSS_ARTICLE = "test_loss_article"
# The L2 penalty Keras adds to its reported losses, at the end of each epoch: the data loss of the
# article's validation loss is val_loss_article - l2_penalty.
L2_PENALTY = "l2_penalty"
