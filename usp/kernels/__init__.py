"""Pure XLA numerics: CWT and WTMM, Malliavin weights, branches A-D (generated from notebooks)."""
