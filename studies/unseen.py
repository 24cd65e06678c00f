"""Token types the training text never holds: give them the embedding of an average once-seen type.

A GPT trained from scratch on a small text (the study's teacher: 200K tokens of Wikitext-2) never meets most
of the 50,257 types, neither as input nor as target. With the embedding tied to the output layer, such a
type's row receives one kind of gradient only, the softmax's "be less likely", and Adam, which sizes every
step to the gradient's own scale, keeps pushing it down for the whole run. Held-out text is not so kind: 5%
of the test split's targets are types the offline train split never holds, and the model pays about 16 nats
for each, 3 more than an interpolated bigram model does.

Good-Turing's estimate of that mass is the share of the training tokens whose type occurs exactly once (N1/N):
the unseen types look like the once-seen ones, not like types the model has learnt to rule out. So after
training, `share_unseen_rows` gives every unseen type the mean row of the once-seen types: each then scores
like an average once-seen type, as input and as output. The study applies it to a teacher trained from
scratch and evaluates the model both ways; a pretrained GPT-2 has learnt every row and needs none of this.
"""

import numpy as np
import torch

from gpt2.model import GPT


def share_unseen_rows(model: GPT, train_counts: np.ndarray) -> int:
    """Set the tied embedding rows of the types with count 0 to the mean row of the types with count 1.
    train_counts: (V,) occurrences of each token id in the training text. Returns how many rows were set."""
    weight = model.transformer.wte.weight  # (V, C), also lm_head.weight
    if len(train_counts) != weight.shape[0]:
        raise ValueError(f"train_counts has {len(train_counts)} entries but the model's vocabulary has {weight.shape[0]}")
    unseen = torch.from_numpy(np.asarray(train_counts) == 0).to(weight.device)
    once = torch.from_numpy(np.asarray(train_counts) == 1).to(weight.device)
    if not once.any():
        raise ValueError("no token type occurs exactly once in the training text, so there is no once-seen row to "
                         "share; the training text is too regular (or too large) for this estimate")
    with torch.no_grad():
        weight[unseen] = weight[once].mean(dim=0).to(weight.dtype)  # (C,) broadcast over the unseen rows
    return int(unseen.sum())
