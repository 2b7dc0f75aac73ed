"""Diagnostics: small experiments that show how the recurrent cells behave.

    gradflow   how far back dL/dh_t survives in RNN, LSTM and GRU (vanishing / exploding)
"""
