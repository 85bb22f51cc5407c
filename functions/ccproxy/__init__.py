"""ccproxy: any LLM client on any model, across four wire protocols."""

__version__ = "0.1.0"
