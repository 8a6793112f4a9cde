"""The stages of a study: the protocol, the runner and one module per stage."""
