"""The NumPy backend: generated/numpy/<cell>.py, one module with forward() and backward().

Registered in config.py; printer.py, layout.py, lowering.py and templates/ write the module.
"""
