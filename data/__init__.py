"""The toy world (world.py), its generator (prepare.py) and the tokenizer with the chat template (tokenizer.py)."""
