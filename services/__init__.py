"""mindgap services: the math verifier and the rewriter."""
