"""The local-robustness metric alpha_lim(F, r) (paper Definition 1), its estimators, and the
layer-wise form (Definition 2, Proposition 1).

Every estimate here comes from evaluating the ratio ||F(x+e) - F(x)|| / ||e|| at chosen
perturbations, so it is a lower bound on the true alpha_lim (a supremum).
"""
