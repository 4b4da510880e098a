"""PRNet: propagation-reconstruction network for one-shot scribble propagation (PRNet paper §3.2–3.3).

- :mod:`lib.prnet.network`   — the network of Fig. 3;
- :mod:`lib.prnet.train`     — self-supervised training, Eq. 1–3;
- :mod:`lib.prnet.propagate` — batched scribble propagation (Eq. 4) and DFD (Eq. 5).
"""
