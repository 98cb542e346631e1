"""The FL loop: the round (round.py), local-training engines, the flat SGD optimizer, seeds."""
