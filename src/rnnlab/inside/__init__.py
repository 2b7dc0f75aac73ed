"""Seeing inside: small experiments that show how the recurrent cells behave.

    explain    one step of a cell, every number forward and backward
    gradcheck  a layer's hand-written gradients against central differences
    gradflow   how far back dL/dh_t survives in RNN, LSTM and GRU (vanishing / exploding)
    demo       a tiny tour: an LSTM learns to continue a sine wave
"""
