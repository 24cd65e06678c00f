"""How good a model or a text is: perplexity (with bits/byte and word perplexity), BLEU, ROUGE and the
Porter stemmer ROUGE can use. Each is checked against its reference implementation in tests/."""
