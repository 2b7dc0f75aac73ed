"""Named configurations that reproduce published setups; flags given on the command line win.

Each preset is a flat dict of option names (as the CLI spells them, with underscores).
"""

from __future__ import annotations

from rnnlab.training import SAVE_MINUTES

DEFAULT_LM = {
    # The main job: a character-level LSTM on the bundled Tiny Shakespeare that writes readable
    # text after a few minutes on 2 CPU cores.
    "data": None, "level": "char", "cell": "lstm", "layers": 2, "hidden": 256, "embed": 64,
    "dropout": 0.0, "tie": False, "init_range": None, "optimizer": "adam", "lr": 3e-3,
    "momentum": 0.0, "weight_decay": 0.0, "clip": 1.0, "loss": "mean", "lr_schedule": "none",
    "lr_decay_start": 4, "lr_decay": 0.5, "patience": 0, "batch_size": 32, "bptt": 64,
    "epochs": 2, "eval_batch_size": 16, "seed": 0, "log_every": 50, "max_steps": 0,
    "dtype": "float32", "save_every": 0, "save_minutes": SAVE_MINUTES,
    "warmup_steps": 0,
}

PRESETS: dict[str, dict] = {
    # Zaremba, Sutskever & Vinyals 2014, "small": 2x200 LSTM, unrolled 20 steps, batch 20,
    # U(-0.1, 0.1), SGD lr 1 halved every epoch after epoch 4, clip 5, 13 epochs, no dropout.
    # The loss differentiated is the NLL summed over the 20 steps and averaged over the batch.
    "zaremba-small": {
        "level": "word", "cell": "lstm", "layers": 2, "hidden": 200, "embed": 200,
        "dropout": 0.0, "tie": False, "init_range": 0.1, "optimizer": "sgd", "lr": 1.0,
        "clip": 5.0, "loss": "sum_time", "lr_schedule": "step", "lr_decay_start": 4,
        "lr_decay": 0.5, "batch_size": 20, "bptt": 20, "epochs": 13, "eval_batch_size": 10,
    },
    # "medium": 2x650, dropout 0.5 on non-recurrent connections, unrolled 35, U(-0.05, 0.05),
    # lr 1 divided by 1.2 every epoch after epoch 6, clip 5, 39 epochs.
    "zaremba-medium": {
        "level": "word", "cell": "lstm", "layers": 2, "hidden": 650, "embed": 650,
        "dropout": 0.5, "tie": False, "init_range": 0.05, "optimizer": "sgd", "lr": 1.0,
        "clip": 5.0, "loss": "sum_time", "lr_schedule": "step", "lr_decay_start": 6,
        "lr_decay": 1 / 1.2, "batch_size": 20, "bptt": 35, "epochs": 39, "eval_batch_size": 10,
    },
    # Deep Learning from Scratch 2, chapter 6 "BetterRnnlm": 2x650 LSTM, dropout 0.5, tied
    # weights, batch 20, 35 steps, SGD lr 20 with the loss averaged over all tokens, clip 0.25,
    # lr divided by 4 whenever validation perplexity gets worse, 40 epochs. Initialisation is
    # NOT the book's (embedding N(0, 0.01^2), LSTM weights N(0, 1/fan_in), zero biases): this
    # preset keeps PyTorch's, whose N(0, 1) embedding, tied to the decoder, starts the loss at
    # ~9.6 nats instead of ln(10000) = 9.2.
    "dlfs2-rnnlm": {
        "level": "word", "cell": "lstm", "layers": 2, "hidden": 650, "embed": 650,
        "dropout": 0.5, "tie": True, "init_range": None, "optimizer": "sgd", "lr": 20.0,
        "clip": 0.25, "loss": "mean", "lr_schedule": "plateau", "lr_decay": 0.25,
        "batch_size": 20, "bptt": 35, "epochs": 40, "eval_batch_size": 10,
    },
}
