"""The C backend: generated/c/<cell>.c and <cell>.h, freestanding C99 with float and double.

Registered in config.py; printer.py and templates/ write the files, build.py and ffi.py run them.
"""
