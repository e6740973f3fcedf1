"""The paper's theory, checked numerically: the Lemma's decomposition (lemma), convergence to critical points (converge),
closed-form population loss (population). Importing it registers the Lemma diagnostics as a per-evaluation metric."""

from . import metric  # noqa: F401  (registers the "theory" metric)
