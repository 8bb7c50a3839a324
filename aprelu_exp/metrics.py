"""The one vocabulary of metric names: what the training module logs, the columns of metrics.csv,
the keys of summary.json, and what the reports, the evidence, the search and MLflow read. A name is
written here once; everything else imports it, so a renamed metric cannot leave an empty column."""

LR = "lr"
TRAIN_LOSS = "train_loss"              # cross-entropy
TRAIN_LOSS_KERAS = "train_loss_keras"  # cross-entropy + the L2 penalty (what Keras prints as `loss`)
TRAIN_ACC = "train_acc"
VAL_LOSS = "val_loss"                  # standard validation: BatchNorm running statistics
VAL_ACC = "val_acc"
VAL_LOSS_ARTICLE = "val_loss_article"  # the article's validation: batch statistics, L2 included
VAL_ACC_ARTICLE = "val_acc_article"
# The L2 penalty Keras adds to its reported losses, at the end of each epoch: the data loss of the
# article's validation loss is val_loss_article - l2_penalty.
L2_PENALTY = "l2_penalty"

# The test set, evaluated once at the end of a run (with data.val_split; without one, validation is
# the test set and these repeat the last epoch's validation metrics).
TEST_ACC = "test_acc"
TEST_ACC_ARTICLE = "test_acc_article"
TEST_LOSS = "test_loss"
TEST_LOSS_ARTICLE = "test_loss_article"

EPOCH = "epoch"
TRAIN_TIME = "train_time_s"
EVAL_TIME = "eval_time_s"
EPOCH_TIME = "epoch_time_s"
TRAIN_IMAGES_PER_S = "train_images_per_s"

# metrics.csv, in column order: the learning curves, then the timings.
CURVES = (EPOCH, LR, TRAIN_LOSS, TRAIN_LOSS_KERAS, TRAIN_ACC, VAL_LOSS, VAL_ACC, VAL_LOSS_ARTICLE, VAL_ACC_ARTICLE,
          L2_PENALTY)
TIMINGS = (TRAIN_TIME, EVAL_TIME, EPOCH_TIME, TRAIN_IMAGES_PER_S)
COLUMNS = CURVES + TIMINGS
ACCURACIES = (TRAIN_ACC, VAL_ACC, VAL_ACC_ARTICLE)
LOSSES = (TRAIN_LOSS, VAL_LOSS, VAL_LOSS_ARTICLE)
VALIDATION = (VAL_LOSS, VAL_ACC, VAL_LOSS_ARTICLE, VAL_ACC_ARTICLE)
TEST = (TEST_LOSS, TEST_ACC, TEST_LOSS_ARTICLE, TEST_ACC_ARTICLE)
