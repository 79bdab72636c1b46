"""How a number or a count is printed for people: the tables', the epoch lines', the last lines'.

    from train.reports.numbers import number, plural
    number(0.3788300835654596)       # '0.3788'
    number(3.954364968445213e29)     # '3.954e+29'  (a diverged loss)
    number(None)                     # '-'
    plural(1, "epoch")               # '1 epoch'; plural(3, "epoch") → '3 epochs'

Importing it imports no Keras, so a command's flags and errors stay fast.
"""

import math

# From here on a number is printed in scientific notation: 1e6 with 4 decimals
# already takes 12 characters, and a diverged loss (1e29) would take 35.
LARGE = 1e6


def number(value, decimals=4):
    """`value` with `decimals` decimals, or in scientific notation from `LARGE` on.

    Below `LARGE` an accuracy or a loss keeps `decimals` decimals (0.9861);
    from `LARGE` on it keeps `decimals` significant digits (3.954e+29).
    None (a number a run never got to) is "-"; NaN and infinity print as nan, inf.
    """
    if value is None:
        return "-"
    value = float(value)
    if math.isfinite(value) and abs(value) >= LARGE:
        return f"{value:.{max(decimals - 1, 0)}e}"
    return f"{value:.{decimals}f}"


def plural(count, noun, nouns=None):
    """'1 epoch', '3 epochs'; `nouns` for a plural that is not `noun` + 's'."""
    return f"{count} {noun if count == 1 else nouns or noun + 's'}"
