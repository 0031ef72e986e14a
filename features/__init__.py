"""Behavioural and TFT features shared by training and scoring; the raw contract in spec."""
