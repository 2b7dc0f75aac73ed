"""Language modelling: truncated BPTT over parallel streams, perplexity, generation."""
