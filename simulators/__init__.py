"""The simulated neuron: registered models, typed unit addresses, batched readout.

``models`` registers each network with its weight source and preprocessing,
``units`` parses and resolves unit addresses, ``neuron`` reads many units in
one forward pass, ``natural_images`` loads reference photos.
"""
