"""The paper's theory, checked numerically: the Lemma's decomposition (lemma), convergence to critical points
(converge), closed-form population loss (population); metric lists every per-evaluation metric of MLP runs."""
